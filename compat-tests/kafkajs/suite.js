// KafkaJS (from npm) against the gateway: `node suite.js <scenario>` with BOOTSTRAP set; exits 0
// when the scenario's checks hold, 1 with the failed check otherwise. The scenarios:
//   idempotent  an idempotent producer (maxInFlightRequests 1) sends 3 x 100 messages with
//               keys and headers to 3 partitions; a consumer without commits reads every one
//               back once, in order, byte for byte
//   group       two consumers of one group split 4 partitions and read everything between
//               them, commit; fetchOffsets shows the committed ends; a restarted
//               consumer of the group reads nothing again; describeGroups / deleteGroups
//   admin       createTopics (with configs, waitForLeaders), createPartitions then an immediate
//               fetchTopicOffsets, fetchTopicOffsetsByTimestamp, describeConfigs, alterConfigs,
//               listTopics, fetchTopicMetadata, deleteTopicRecords, deleteTopics
//   configs     createTopics with compression.type=gzip (KafkaJS decodes gzip only, without
//               codec plugins) and cleanup.policy=compact: keyless records refused with
//               INVALID_RECORD, keyed ones read back; INVALID_CONFIG for an unknown config
//   transactions  a transactional producer commits, aborts, and commits with sendOffsets (a
//               group's offset inside the transaction); a read_committed consumer gets exactly
//               the committed records and the group its offset
'use strict'
const assert = require('node:assert/strict')
const { Kafka, logLevel, ConfigResourceTypes, CompressionTypes } = require('kafkajs')

const bootstrap = process.env.BOOTSTRAP
const kafka = new Kafka({ clientId: 'compat-kafkajs', brokers: [bootstrap], logLevel: logLevel.NOTHING, retry: { retries: 8 } })
const unique = (p) => `${p}-${process.pid}-${Date.now()}`

async function withAdmin (f) {
  const admin = kafka.admin()
  await admin.connect()
  try {
    return await f(admin)
  } finally {
    await admin.disconnect()
  }
}

// Reads `count` messages of `topic` with a consumer of `groupId` (no commits unless `commit`),
// failing after `ms`.
async function consumeAll (topic, count, { groupId = unique('reader'), commit = false, ms = 30000 } = {}) {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000 })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  const got = []
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumed ${got.length} of ${count} within ${ms} ms`)), ms)
    consumer.run({
      autoCommit: commit,
      eachMessage: async ({ partition, message }) => {
        got.push({ partition, offset: Number(message.offset), key: message.key && message.key.toString(), value: message.value.toString(), headers: message.headers })
        if (got.length >= count) {
          clearTimeout(timer)
          resolve()
        }
      }
    }).catch(reject)
  })
  // a little longer: duplicates would show
  await new Promise((resolve) => setTimeout(resolve, 500))
  await consumer.disconnect()
  return got
}

const scenarios = {
  async idempotent () {
    const topic = unique('kjs-idem')
    await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }))
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    const sent = []
    for (let round = 0; round < 3; round++) {
      for (let partition = 0; partition < 3; partition++) {
        const messages = []
        for (let i = 0; i < 100; i++) {
          const n = round * 100 + i
          messages.push({ partition, key: `k${partition}-${n}`, value: `v${partition}-${n}`, headers: { n: String(n) } })
        }
        const acks = await producer.send({ topic, acks: -1, compression: round === 1 ? CompressionTypes.GZIP : CompressionTypes.None, messages })
        assert.equal(acks.length, 1)
        assert.equal(acks[0].errorCode, 0)
        assert.equal(Number(acks[0].baseOffset), round * 100, `partition ${partition} round ${round}`)
        sent.push(...messages)
      }
    }
    await producer.disconnect()
    const got = await consumeAll(topic, sent.length)
    assert.equal(got.length, sent.length, 'every message once')
    for (let partition = 0; partition < 3; partition++) {
      const mine = got.filter((m) => m.partition === partition)
      assert.deepEqual(mine.map((m) => m.offset), [...Array(300).keys()], `partition ${partition}: dense offsets in order`)
      assert.deepEqual(mine.map((m) => [m.key, m.value, m.headers.n.toString()]),
        sent.filter((m) => m.partition === partition).map((m) => [m.key, m.value, m.headers.n]))
    }
  },

  async group () {
    const topic = unique('kjs-group')
    const groupId = unique('kjs-g')
    await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true }))
    const producer = kafka.producer()
    await producer.connect()
    const messages = [...Array(400).keys()].map((i) => ({ key: `k${i}`, value: `v${i}` }))
    await producer.send({ topic, acks: -1, messages })
    await producer.disconnect()
    // two members at once: the partitions split between them, everything is read
    const seen = new Map()
    const members = [0, 1].map(() => kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000 }))
    const assigned = [0, 0]
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the group read ${seen.size} of 400 within 60 s`)), 60000)
      members.forEach(async (c, i) => {
        try {
          c.on(c.events.GROUP_JOIN, (e) => { assigned[i] = (e.payload.memberAssignment[topic] || []).length })
          await c.connect()
          await c.subscribe({ topic, fromBeginning: true })
          await c.run({
            eachMessage: async ({ partition, message }) => {
              seen.set(`${partition}/${message.offset}`, i)
              if (seen.size === 400) {
                clearTimeout(timer)
                resolve()
              }
            }
          })
        } catch (e) {
          reject(e)
        }
      })
    })
    await Promise.all(members.map((c) => c.disconnect())) // commits what was read
    assert.equal(seen.size, 400, 'every message consumed by the group')
    assert.ok(assigned.every((n) => n > 0) || assigned.some((n) => n === 4), `assignments ${assigned}`)
    await withAdmin(async (admin) => {
      const offsets = await admin.fetchOffsets({ groupId, topics: [topic] })
      const total = offsets[0].partitions.reduce((s, p) => s + Number(p.offset), 0)
      assert.equal(total, 400, `committed ends ${JSON.stringify(offsets)}`)
      const ends = await admin.fetchTopicOffsets(topic)
      for (const p of offsets[0].partitions) {
        assert.equal(p.offset, ends.find((e) => e.partition === p.partition).high, `partition ${p.partition} committed at its end`)
      }
      const { groups } = await admin.describeGroups([groupId])
      assert.equal(groups[0].groupId, groupId)
      assert.equal(groups[0].state, 'Empty')
    })
    // a restarted member resumes from the commits: nothing to read
    const consumer = kafka.consumer({ groupId, sessionTimeout: 10000 })
    await consumer.connect()
    await consumer.subscribe({ topic, fromBeginning: true })
    let again = 0
    await consumer.run({ eachMessage: async () => { again++ } })
    await new Promise((resolve) => setTimeout(resolve, 5000))
    await consumer.disconnect()
    assert.equal(again, 0, 'a restarted member read committed messages again')
    await withAdmin(async (admin) => {
      await admin.deleteGroups([groupId])
      const { groups } = await admin.listGroups()
      assert.ok(!groups.some((g) => g.groupId === groupId), 'the group was deleted')
    })
  },

  async admin () {
    const topic = unique('kjs-admin')
    await withAdmin(async (admin) => {
      assert.equal(await admin.createTopics({
        topics: [{ topic, numPartitions: 2, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
        waitForLeaders: true
      }), true)
      assert.ok((await admin.listTopics()).includes(topic))
      // createPartitions, then at once the offsets of every partition (the new ones included)
      await admin.createPartitions({ topicPartitions: [{ topic, count: 5 }] })
      const offsets = await admin.fetchTopicOffsets(topic)
      assert.deepEqual(offsets.map((o) => [o.partition, o.low, o.high]).sort(), [0, 1, 2, 3, 4].map((p) => [p, '0', '0']))
      const md = await admin.fetchTopicMetadata({ topics: [topic] })
      assert.equal(md.topics[0].partitions.length, 5)

      const producer = kafka.producer()
      await producer.connect()
      const base = Date.now() - 600000
      for (let i = 0; i < 10; i++) {
        await producer.send({ topic, acks: -1, messages: [{ partition: 4, value: `m${i}`, timestamp: String(base + i * 1000) }] })
      }
      await producer.disconnect()
      const byTime = await admin.fetchTopicOffsetsByTimestamp(topic, base + 4500)
      assert.equal(byTime.find((o) => o.partition === 4).offset, '5')

      const cfg = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false })
      const entries = Object.fromEntries(cfg.resources[0].configEntries.map((e) => [e.configName, e]))
      assert.equal(entries['retention.ms'].configValue, '3600000')
      assert.equal(entries['cleanup.policy'].configValue, 'delete')
      assert.equal(entries['retention.ms'].isDefault, false)
      await admin.alterConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: '7200000' }] }] })
      const after = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }], includeSynonyms: false })
      assert.deepEqual(after.resources[0].configEntries.map((e) => [e.configName, e.configValue]), [['retention.ms', '7200000']])

      await admin.deleteTopicRecords({ topic, partitions: [{ partition: 4, offset: '3' }] })
      const moved = await admin.fetchTopicOffsets(topic)
      assert.equal(moved.find((o) => o.partition === 4).low, '3')

      await admin.deleteTopics({ topics: [topic] })
      assert.ok(!(await admin.listTopics()).includes(topic))
    })
  },

  async configs () {
    const topic = unique('kjs-cfg')
    await withAdmin(async (admin) => {
      await admin.createTopics({
        topics: [{ topic, numPartitions: 1, configEntries: [{ name: 'compression.type', value: 'gzip' }, { name: 'cleanup.policy', value: 'compact' }] }],
        waitForLeaders: true
      })
      await assert.rejects(admin.createTopics({ topics: [{ topic: unique('kjs-bad'), configEntries: [{ name: 'no.such.config', value: '1' }] }] }),
        (e) => JSON.stringify(e.errors || e).includes('INVALID_CONFIG') || /config/i.test(e.message))
    })
    const producer = kafka.producer({ retry: { retries: 0 } })
    await producer.connect()
    await assert.rejects(producer.send({ topic, acks: -1, messages: [{ value: 'keyless' }] }),
      (e) => e.type === 'INVALID_RECORD' || /INVALID_RECORD|invalid/i.test(String(e)))
    await producer.send({ topic, acks: -1, messages: [{ key: 'k', value: 'kept' }] })
    await producer.disconnect()
    const got = await consumeAll(topic, 1)
    assert.deepEqual(got.map((m) => [m.offset, m.key, m.value]), [[0, 'k', 'kept']])
  },

  async transactions () {
    const topic = unique('kjs-txn')
    await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true }))
    const producer = kafka.producer({ transactionalId: unique('kjs-tid'), idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    let txn = await producer.transaction()
    await txn.send({ topic, messages: [{ key: 'a', value: 'committed-1', partition: 0 }, { key: 'b', value: 'committed-2', partition: 1 }] })
    await txn.commit()
    txn = await producer.transaction()
    await txn.send({ topic, messages: [{ key: 'c', value: 'aborted', partition: 0 }] })
    await txn.abort()
    // consume-transform-produce: a group's offset committed inside the transaction
    const groupId = unique('kjs-eos')
    txn = await producer.transaction()
    await txn.send({ topic, messages: [{ key: 'd', value: 'committed-3', partition: 1 }] })
    await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic, partitions: [{ partition: 0, offset: '1' }] }] })
    await txn.commit()
    await producer.disconnect()
    // (KafkaJS consumers read committed by default)
    const got = await consumeAll(topic, 3)
    assert.deepEqual(got.map((m) => m.value).sort(), ['committed-1', 'committed-2', 'committed-3'])
    const offsets = await withAdmin((a) => a.fetchOffsets({ groupId, topics: [topic] }))
    assert.equal(offsets[0].partitions.find((p) => p.partition === 0).offset, '1')
  }
}

const name = process.argv[2]
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}; one of ${Object.keys(scenarios).join(', ')}`)
  process.exit(2)
}
const deadline = setTimeout(() => {
  console.error(`${name}: still running after 120 s`)
  process.exit(1)
}, 120000)
scenarios[name]().then(() => {
  clearTimeout(deadline)
  console.log(`${name}: ok`)
  process.exit(0)
}, (e) => {
  clearTimeout(deadline)
  console.error(`${name}: FAILED\n${e && e.stack ? e.stack : e}`)
  process.exit(1)
})

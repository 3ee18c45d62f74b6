//! The principal of a TLS client certificate: its subject as an RFC 2253 distinguished name
//! (what Kafka's `X500Principal.getName()` gives: `CN=alice,OU=eng,O=Example,C=DE`, the last RDN
//! of the certificate first), then mapped by Kafka's `ssl.principal.mapping.rules`: a
//! comma-separated list of `RULE:pattern/replacement/[LU]` (the first whose pattern matches the
//! whole name rewrites it, `L`/`U` lower- or upper-case the result) and `DEFAULT` (the name as
//! is). No rule matching is a failed authentication, as in Kafka.
//!
//! The subject is read with a small DER walker over the certificate (tbsCertificate's sixth
//! field); anything it cannot read fails the handshake's principal, never panics.

use regex::Regex;

/// Reads one DER element: (tag, content, rest).
pub fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The dotted form of an OID's content bytes.
fn oid(content: &[u8]) -> Option<String> {
    let (&first, rest) = content.split_first()?;
    let mut parts = vec![(first / 40).min(2) as u64, (first as u64).saturating_sub(40 * (first / 40).min(2) as u64)];
    let mut v: u64 = 0;
    for &b in rest {
        v = v.checked_mul(128)? | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            parts.push(v);
            v = 0;
        }
    }
    Some(parts.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("."))
}

fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253 escaping of an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special =
            matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') || (i == 0 && (c == '#' || c == ' ')) || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A directory string's text (UTF8, Printable, IA5, Teletex as Latin-1, BMP, Universal).
fn text(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 | 0x12 | 0x1a => String::from_utf8(content.to_vec()).ok(),
        0x14 => Some(content.iter().map(|&b| b as char).collect()),
        0x1e => {
            let units: Vec<u16> = content.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
            String::from_utf16(&units).ok()
        }
        0x1c => content.chunks(4).map(|c| (c.len() == 4).then(|| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))?).collect(),
        _ => None,
    }
}

/// The subject of a DER certificate as an RFC 2253 name.
pub fn subject_dn(cert: &[u8]) -> Option<String> {
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    let mut rest = tbs;
    let (tag, _, r) = der(rest)?;
    if tag == 0xa0 {
        rest = r; // version
    }
    // serialNumber, signature, issuer, validity, then the subject.
    for _ in 0..4 {
        rest = der(rest)?.2;
    }
    let (tag, name, _) = der(rest)?;
    if tag != 0x30 {
        return None;
    }
    let mut rdns = Vec::new();
    let mut r = name;
    while !r.is_empty() {
        let (tag, set, next) = der(r)?;
        if tag != 0x31 {
            return None;
        }
        r = next;
        let mut atvs = Vec::new();
        let mut s = set;
        while !s.is_empty() {
            let (_, atv, next) = der(s)?;
            s = next;
            let (otag, oid_bytes, value) = der(atv)?;
            if otag != 0x06 {
                return None;
            }
            let dotted = oid(oid_bytes)?;
            let (vtag, vcontent, _) = der(value)?;
            atvs.push(match (keyword(&dotted), text(vtag, vcontent)) {
                (Some(k), Some(t)) => format!("{k}={}", escape(&t)),
                _ => format!("{dotted}=#{}", value[..value.len()].iter().map(|b| format!("{b:02x}")).collect::<String>()),
            });
        }
        rdns.push(atvs.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace { pattern: Regex, replacement: String, case: Option<char> },
}

/// Kafka's `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
pub struct MappingRules(Vec<Rule>);

/// Reads up to an unescaped `/`; returns (text with `\/` unescaped, rest after the slash).
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if s[i + 1..].starts_with('/') => {
                out.push('/');
                chars.next();
            }
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

impl MappingRules {
    pub fn parse(spec: &str) -> Result<MappingRules, String> {
        let mut rules = Vec::new();
        let mut rest = spec.trim();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = r;
            } else if let Some(r) = rest.strip_prefix("RULE:") {
                let (pattern, r) = until_slash(r).ok_or_else(|| format!("rule without a replacement: {rest}"))?;
                let (replacement, r) = until_slash(r).ok_or_else(|| format!("rule not closed by '/': {rest}"))?;
                let (case, r) = match r.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &r[1..]),
                    _ => (None, r),
                };
                let pattern = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("bad pattern {pattern:?}: {e}"))?;
                rules.push(Rule::Replace { pattern, replacement, case });
                rest = r;
            } else {
                return Err(format!("expected DEFAULT or RULE: at {rest:?}"));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(r) => rest = r.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("expected ',' at {rest:?}")),
            }
        }
        if rules.is_empty() {
            rules.push(Rule::Default);
        }
        Ok(MappingRules(rules))
    }

    /// The short name for a distinguished name, or None when no rule matches.
    pub fn apply(&self, dn: &str) -> Option<String> {
        for rule in &self.0 {
            match rule {
                Rule::Default => return Some(dn.to_string()),
                Rule::Replace { pattern, replacement, case } => {
                    if pattern.is_match(dn) {
                        let out = pattern.replace(dn, replacement.as_str()).into_owned();
                        return Some(match case {
                            Some('L') => out.to_lowercase(),
                            Some('U') => out.to_uppercase(),
                            _ => out,
                        });
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 128 {
            out.push(content.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    fn atv(oid: &[u8], tag: u8, v: &str) -> Vec<u8> {
        tlv(0x31, &tlv(0x30, &[tlv(0x06, oid), tlv(tag, v.as_bytes())].concat()))
    }

    /// A certificate skeleton with the given subject (only the fields the walker reads).
    fn cert(subject: Vec<u8>) -> Vec<u8> {
        let tbs = [
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &[1, 2, 3]),
            tlv(0x30, &tlv(0x06, &[0x2a, 0x86, 0x48])),
            tlv(0x30, &atv(&[0x55, 0x04, 0x03], 0x0c, "issuer")),
            tlv(0x30, &[tlv(0x17, b"250101000000Z"), tlv(0x17, b"350101000000Z")].concat()),
            tlv(0x30, &subject),
            tlv(0x30, &[0; 200]),
        ]
        .concat();
        tlv(0x30, &[tlv(0x30, &tbs), tlv(0x30, &[]), tlv(0x03, &[0])].concat())
    }

    #[test]
    fn the_subject_reads_as_rfc_2253_last_rdn_first() {
        let subject = [
            atv(&[0x55, 0x04, 0x06], 0x13, "DE"),
            atv(&[0x55, 0x04, 0x0a], 0x0c, "Example, Inc"),
            atv(&[0x55, 0x04, 0x0b], 0x0c, "eng"),
            atv(&[0x55, 0x04, 0x03], 0x0c, "alice"),
        ]
        .concat();
        assert_eq!(subject_dn(&cert(subject)).as_deref(), Some("CN=alice,OU=eng,O=Example\\, Inc,C=DE"));
        // an attribute without an RFC 2253 keyword (emailAddress) is its OID and DER in hex
        let email = atv(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01], 0x16, "a@b");
        assert_eq!(subject_dn(&cert(email)).as_deref(), Some("1.2.840.113549.1.9.1=#1603614062"));
    }

    #[test]
    fn garbage_is_no_subject_not_a_panic() {
        assert_eq!(subject_dn(&[]), None);
        assert_eq!(subject_dn(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        let good = cert(atv(&[0x55, 0x04, 0x03], 0x0c, "x"));
        for cut in 0..good.len() {
            let _ = subject_dn(&good[..cut]);
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = subject_dn(&bytes);
        }
    }

    #[test]
    fn mapping_rules_as_kafka_documents_them() {
        let r = MappingRules::parse("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=.*$/$1@$2/L, DEFAULT").unwrap();
        assert_eq!(r.apply("CN=kafka-svc,OU=ServiceUsers,O=Unknown").as_deref(), Some("kafka-svc"));
        assert_eq!(r.apply("CN=Adam,OU=Eng,O=Unknown,C=US").as_deref(), Some("adam@eng"));
        assert_eq!(r.apply("O=Other").as_deref(), Some("O=Other"), "DEFAULT: the name as is");
        let strict = MappingRules::parse("RULE:^CN=([^,]*).*$/$1/U").unwrap();
        assert_eq!(strict.apply("CN=bob,O=x").as_deref(), Some("BOB"));
        assert_eq!(strict.apply("O=x"), None, "no rule matches: no principal");
        let slash = MappingRules::parse("RULE:^CN=(.*)$/svc\\/$1/").unwrap();
        assert_eq!(slash.apply("CN=a").as_deref(), Some("svc/a"));
        assert_eq!(MappingRules::parse("").unwrap().apply("CN=a").as_deref(), Some("CN=a"));
        for bad in ["RULE:^CN=(.*)$", "RULE:^CN=(.*$/$1/", "SOMETHING", "DEFAULT x"] {
            assert!(MappingRules::parse(bad).is_err(), "{bad}");
        }
    }
}

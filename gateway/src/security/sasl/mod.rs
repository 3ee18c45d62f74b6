//! SASL on a connection: SaslHandshake chooses the mechanism, then tokens flow either in
//! SaslAuthenticate requests (v1 handshakes, KIP-152) or, after a v0 handshake, as raw
//! size-prefixed frames with no Kafka header (the server reads the next frame raw, see
//! `server.rs`). [`Authenticator`] is one connection's state: which mechanisms the listener
//! offers, where an exchange stands, the principal once authenticated, and when its session
//! ends (`connections_max_reauth_ms`, KIP-368: the client re-authenticates with a new handshake
//! on the same connection, as the same principal; a connection whose session ended is closed at
//! its next other request).
//!
//! Failures carry Kafka's message and no part of any credential.

pub mod oauthbearer;
pub mod scram;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;

use self::scram::{parse_client_first, Mechanism, ScramServer};
use super::credentials::Credentials;

pub const PLAIN: &str = "PLAIN";
pub const OAUTHBEARER: &str = "OAUTHBEARER";
/// The mechanisms this gateway implements.
pub const MECHANISMS: &[&str] = &[PLAIN, "SCRAM-SHA-256", "SCRAM-SHA-512", OAUTHBEARER];
/// Those a SASL listener offers unless configured otherwise (OAUTHBEARER needs keys).
pub const DEFAULT_MECHANISMS: &[&str] = &[PLAIN, "SCRAM-SHA-256", "SCRAM-SHA-512"];

#[derive(Debug)]
enum Phase {
    /// Waiting for SaslHandshake.
    Handshake,
    /// A mechanism chosen, waiting for the client's first token.
    First { mech: String },
    /// A SCRAM exchange after the server-first message.
    Scram { server: Box<ScramServer> },
    /// An OAUTHBEARER token was refused: the error challenge went out, the exchange fails next.
    OauthRefused { reason: String },
}

/// What one token of the client leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this and wait for the client's next token.
    Continue(Vec<u8>),
    /// Authenticated: send this last token; the session lasts `lifetime_ms` (0: no limit).
    Done { token: Vec<u8>, principal: String, lifetime_ms: i64 },
    /// Refused: answer SASL_AUTHENTICATION_FAILED with this message, then close.
    Failed(String),
}

/// Listener-wide SASL settings.
#[derive(Clone)]
pub struct SaslSettings {
    pub creds: Arc<Credentials>,
    pub mechanisms: Arc<Vec<String>>,
    /// `connections_max_reauth_ms`; zero: sessions do not expire.
    pub reauth: Duration,
    /// OAUTHBEARER's token validation, when the mechanism is on.
    pub oauth: Option<Arc<oauthbearer::Validator>>,
}

pub struct Authenticator {
    settings: SaslSettings,
    phase: Phase,
    v0: bool,
    principal: Option<String>,
    expires: Option<Instant>,
}

impl Authenticator {
    pub fn new(settings: SaslSettings) -> Authenticator {
        Authenticator { settings, phase: Phase::Handshake, v0: false, principal: None, expires: None }
    }

    pub fn mechanisms(&self) -> &[String] {
        &self.settings.mechanisms
    }

    /// SaslHandshake: starts an exchange (also a re-authentication of an authenticated one).
    pub fn handshake(&mut self, mechanism: &str, version: i16) -> Result<(), ResponseError> {
        if !matches!(self.phase, Phase::Handshake) {
            return Err(ResponseError::IllegalSaslState);
        }
        if !self.settings.mechanisms.iter().any(|m| m == mechanism) {
            return Err(ResponseError::UnsupportedSaslMechanism);
        }
        if version == 0 && self.principal.is_some() {
            return Err(ResponseError::IllegalSaslState); // re-authentication needs SaslAuthenticate
        }
        self.v0 = version == 0;
        self.phase = Phase::First { mech: mechanism.to_string() };
        Ok(())
    }

    /// Whether the next frame is a raw token (after a v0 handshake, until the exchange ends).
    pub fn expects_raw_token(&self) -> bool {
        self.v0 && !matches!(self.phase, Phase::Handshake)
    }

    /// Whether a SaslAuthenticate fits where the exchange stands.
    pub fn in_exchange(&self) -> bool {
        !matches!(self.phase, Phase::Handshake)
    }

    pub fn authenticated(&self) -> bool {
        self.principal.is_some()
    }

    /// The session ended (KIP-368) and was not renewed.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// One client token.
    pub async fn authenticate(&mut self, token: &[u8]) -> Step {
        let phase = std::mem::replace(&mut self.phase, Phase::Handshake);
        let step = match phase {
            Phase::Handshake => Step::Failed("SaslAuthenticate before SaslHandshake".into()),
            Phase::First { mech } if mech == PLAIN => match self.plain(token).await {
                Ok(user) => self.done(Vec::new(), user, None),
                Err(msg) => Step::Failed(msg),
            },
            Phase::First { mech } if mech == OAUTHBEARER => {
                let now = wal_core::util::now_ms();
                let checked = match &self.settings.oauth {
                    None => Err("OAUTHBEARER is not configured".to_string()),
                    Some(v) => oauthbearer::bearer_token(token).and_then(|t| v.validate(&t, now)),
                };
                match checked {
                    Ok((user, exp_ms)) => self.done(Vec::new(), user, Some(Duration::from_millis(exp_ms.saturating_sub(now)))),
                    Err(reason) => {
                        self.phase = Phase::OauthRefused { reason };
                        Step::Continue(oauthbearer::error_challenge())
                    }
                }
            }
            Phase::OauthRefused { reason } => Step::Failed(format!("Authentication failed: {reason}")),
            Phase::First { mech } => {
                let m = Mechanism::from_name(&mech).expect("only offered mechanisms are chosen");
                match parse_client_first(token) {
                    Err(e) => Step::Failed(e.to_string()),
                    Ok(first) => match self.settings.creds.scram(&first.user, m).await {
                        Err(e) => Step::Failed(format!("credentials unavailable: {e}")),
                        Ok(cred) => {
                            let server = ScramServer::new(m, first, cred);
                            let reply = server.server_first().as_bytes().to_vec();
                            self.phase = Phase::Scram { server: Box::new(server) };
                            Step::Continue(reply)
                        }
                    },
                }
            }
            Phase::Scram { server } => match server.finish(token) {
                Ok(last) => {
                    let user = server.user().to_string();
                    self.done(last.into_bytes(), user, None)
                }
                Err(e) => Step::Failed(e.to_string()),
            },
        };
        if !matches!(step, Step::Continue(_)) {
            self.v0 = false;
        }
        step
    }

    /// Authenticated as `user`; `credential_lifetime`: how long the credential (a token) is valid.
    fn done(&mut self, token: Vec<u8>, user: String, credential_lifetime: Option<Duration>) -> Step {
        let principal = format!("User:{user}");
        if self.principal.as_ref().is_some_and(|p| *p != principal) {
            return Step::Failed("Cannot change principals during re-authentication".into());
        }
        // With re-authentication on, a session lasts until the sooner of the limit and the
        // credential's own expiry (KIP-368).
        let reauth = self.settings.reauth;
        let lifetime = match credential_lifetime {
            Some(c) if !reauth.is_zero() => reauth.min(c),
            _ => reauth,
        };
        self.expires = (!lifetime.is_zero()).then(|| Instant::now() + lifetime);
        self.principal = Some(principal.clone());
        Step::Done { token, principal, lifetime_ms: lifetime.as_millis() as i64 }
    }

    /// PLAIN (RFC 4616): `authzid NUL authcid NUL password`.
    async fn plain(&self, token: &[u8]) -> Result<String, String> {
        let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
        let [authzid, user, password] = parts.as_slice() else {
            return Err("Invalid SASL/PLAIN response: expected 3 tokens".into());
        };
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "Invalid SASL/PLAIN response: not UTF-8".to_string());
        let (authzid, user, password) = (text(authzid)?, text(user)?, text(password)?);
        if user.is_empty() || password.is_empty() {
            return Err("Authentication failed: username and password must not be empty".into());
        }
        if !authzid.is_empty() && authzid != user {
            return Err("Authentication failed: Client requested an authorization id that is different from username".into());
        }
        match self.settings.creds.check_password(&user, &password).await {
            Ok(true) => Ok(user),
            Ok(false) => Err("Authentication failed: Invalid username or password".into()),
            Err(e) => Err(format!("credentials unavailable: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use wal_core::meta::MetaStore;

    /// One credential store for every test (deriving SCRAM keys is slow in debug builds).
    fn creds() -> Arc<Credentials> {
        static CREDS: std::sync::OnceLock<Arc<Credentials>> = std::sync::OnceLock::new();
        CREDS
            .get_or_init(|| {
                let meta: Arc<dyn MetaStore> = Arc::new(wal_core::meta::embedded::EmbeddedMeta::in_memory());
                let users = BTreeMap::from([("alice".to_string(), "alicepw".to_string())]);
                Arc::new(Credentials::new(meta, &users))
            })
            .clone()
    }

    fn auth(reauth_ms: u64) -> Authenticator {
        Authenticator::new(SaslSettings {
            creds: creds(),
            mechanisms: Arc::new(MECHANISMS.iter().map(|m| m.to_string()).collect()),
            reauth: Duration::from_millis(reauth_ms),
            oauth: Some(Arc::new(
                oauthbearer::Validator::new(&oauthbearer::OauthConfig { hmac_secrets: vec!["c2VjcmV0".into()], ..Default::default() })
                    .unwrap(),
            )),
        })
    }

    #[tokio::test]
    async fn plain_logins_and_refusals() {
        let mut a = auth(0);
        assert_eq!(a.handshake("GSSAPI", 1), Err(ResponseError::UnsupportedSaslMechanism));
        a.handshake(PLAIN, 1).unwrap();
        assert_eq!(a.handshake(PLAIN, 1), Err(ResponseError::IllegalSaslState), "one exchange at a time");
        let step = a.authenticate(b"\0alice\0alicepw").await;
        assert_eq!(step, Step::Done { token: vec![], principal: "User:alice".into(), lifetime_ms: 0 });
        assert!(a.authenticated() && !a.expired(Instant::now()));
        for bad in [&b"\0alice\0wrong"[..], b"\0bob\0alicepw", b"bob\0alice\0alicepw", b"alice\0alicepw", b"\0\0"] {
            let mut a = auth(0);
            a.handshake(PLAIN, 1).unwrap();
            let Step::Failed(msg) = a.authenticate(bad).await else { panic!("{bad:?} accepted") };
            assert!(!msg.contains("alicepw") && !msg.contains("wrong"), "no credential in {msg}");
            assert!(!a.authenticated());
        }
    }

    #[tokio::test]
    async fn scram_exchange_and_reauthentication_keeps_the_principal() {
        let mut a = auth(60_000);
        a.handshake("SCRAM-SHA-512", 1).unwrap();
        let bare = "n=alice,r=clientnonce";
        let Step::Continue(first) = a.authenticate(format!("n,,{bare}").as_bytes()).await else { panic!() };
        let first = String::from_utf8(first).unwrap();
        let (fin, _) = scram::tests::client_final(Mechanism::Sha512, "alicepw", bare, &first);
        let Step::Done { principal, lifetime_ms, .. } = a.authenticate(fin.as_bytes()).await else { panic!() };
        assert_eq!((principal.as_str(), lifetime_ms), ("User:alice", 60_000));
        assert!(!a.expired(Instant::now()) && a.expired(Instant::now() + Duration::from_secs(61)));
        // re-authentication over SaslAuthenticate, as the same user
        a.handshake(PLAIN, 1).unwrap();
        assert!(matches!(a.authenticate(b"\0alice\0alicepw").await, Step::Done { .. }));
        assert_eq!(a.handshake(PLAIN, 0), Err(ResponseError::IllegalSaslState), "no v0 re-authentication");
    }

    #[tokio::test]
    async fn oauthbearer_tokens_and_the_error_challenge() {
        let mut a = auth(60_000);
        a.handshake(OAUTHBEARER, 1).unwrap();
        let now = wal_core::util::now_ms() / 1000;
        let token = oauthbearer::tests::hs256(b"secret", &serde_json::json!({"sub": "svc", "exp": now + 10}));
        let Step::Done { principal, lifetime_ms, .. } = a.authenticate(format!("n,,\x01auth=Bearer {token}\x01\x01").as_bytes()).await
        else {
            panic!()
        };
        assert_eq!(principal, "User:svc");
        assert!(lifetime_ms <= 10_000 && lifetime_ms > 5_000, "the session ends with the token: {lifetime_ms}");
        let mut b = auth(0);
        b.handshake(OAUTHBEARER, 1).unwrap();
        let forged = oauthbearer::tests::hs256(b"guess", &serde_json::json!({"sub": "svc", "exp": now + 10}));
        let step = b.authenticate(format!("n,,\x01auth=Bearer {forged}\x01\x01").as_bytes()).await;
        assert_eq!(step, Step::Continue(oauthbearer::error_challenge()));
        assert!(matches!(b.authenticate(b"\x01").await, Step::Failed(_)));
        assert!(!b.authenticated());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever a client sends as its tokens, every mechanism answers with a step (or a
        /// refusal), never a panic, and never authenticates.
        #[test]
        fn arbitrary_tokens_never_panic_nor_authenticate(
            mech in proptest::sample::select(MECHANISMS.to_vec()),
            tokens in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 1..4),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut a = auth(0);
                a.handshake(mech, 1).unwrap();
                for t in &tokens {
                    if let Step::Done { .. } = a.authenticate(t).await {
                        panic!("{mech} authenticated random bytes");
                    }
                    if !a.in_exchange() {
                        break;
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn v0_framing_expects_raw_tokens_until_the_exchange_ends() {
        let mut a = auth(0);
        a.handshake("SCRAM-SHA-256", 0).unwrap();
        assert!(a.expects_raw_token());
        let Step::Continue(_) = a.authenticate(b"n,,n=alice,r=abc").await else { panic!() };
        assert!(a.expects_raw_token());
        assert!(matches!(a.authenticate(b"c=biws,r=zzz,p=AAAA").await, Step::Failed(_)));
        assert!(!a.expects_raw_token() && !a.authenticated());
    }
}

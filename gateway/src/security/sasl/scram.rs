//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka runs them: the server keeps
//! per user and mechanism a salt, an iteration count, StoredKey = H(HMAC(SaltedPassword,
//! "Client Key")) and ServerKey = HMAC(SaltedPassword, "Server Key"), never the password.
//! [`ScramServer`] is one exchange: client-first (`n,,n=user,r=nonce`), server-first (the nonce
//! extended, salt, iterations), client-final (channel binding `biws`, the proof), server-final
//! (the server signature).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::security::constant_time_eq;

/// Kafka's bounds on a credential's iterations.
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(s: &str) -> Option<Mechanism> {
        match s {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    /// The numbers of Kafka's ScramMechanism (DescribeUserScramCredentials, AlterUserScram...).
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<Mechanism> {
        match t {
            1 => Some(Mechanism::Sha256),
            2 => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi(): PBKDF2 with this mechanism's HMAC, one block.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut u = self.hmac(password, &[salt, &1u32.to_be_bytes()].concat());
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &u);
            out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
        }
        out
    }
}

/// What the server stores for one user and mechanism.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

impl ScramCredential {
    /// From the salted password (what AlterUserScramCredentials carries, KIP-554).
    pub fn from_salted(mech: Mechanism, salted: &[u8], salt: Vec<u8>, iterations: u32) -> ScramCredential {
        let client_key = mech.hmac(salted, b"Client Key");
        ScramCredential { salt, stored_key: mech.hash(&client_key), server_key: mech.hmac(salted, b"Server Key"), iterations }
    }

    /// From a password, with a fresh random salt (configured users).
    pub fn from_password(mech: Mechanism, password: &str, iterations: u32) -> ScramCredential {
        let mut salt = vec![0u8; 24];
        rand::thread_rng().fill_bytes(&mut salt);
        let salted = mech.salted_password(password.as_bytes(), &salt, iterations);
        ScramCredential::from_salted(mech, &salted, salt, iterations)
    }

    /// Whether `password` is this credential's (PLAIN logins against SCRAM credentials).
    pub fn matches_password(&self, mech: Mechanism, password: &str) -> bool {
        let salted = mech.salted_password(password.as_bytes(), &self.salt, self.iterations);
        let stored = mech.hash(&mech.hmac(&salted, b"Client Key"));
        constant_time_eq(&stored, &self.stored_key)
    }
}

/// Why an exchange failed (the message goes to the client; nothing of a credential is in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("invalid SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("Authentication failed during authentication due to invalid credentials with SASL mechanism {0}")]
    InvalidCredentials(&'static str),
}

/// The parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    pub user: String,
    pub nonce: String,
    /// `n,,` or `n,a=...,`: what the client-final's channel binding must repeat.
    gs2_header: String,
    bare: String,
}

/// SCRAM's username escaping: `=2C` is `,` and `=3D` is `=`.
fn unescape_user(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

pub fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, ScramError> {
    let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut parts = msg.splitn(3, ',');
    let cb = parts.next().ok_or(ScramError::Malformed("no channel binding flag"))?;
    if cb != "n" && cb != "y" {
        // "p=" asks for channel binding, which Kafka does not offer
        return Err(ScramError::Malformed("channel binding is not supported"));
    }
    let authzid = parts.next().ok_or(ScramError::Malformed("no authorization id field"))?;
    if !authzid.is_empty() && !authzid.starts_with("a=") {
        return Err(ScramError::Malformed("bad authorization id field"));
    }
    let bare = parts.next().ok_or(ScramError::Malformed("no client-first-message-bare"))?;
    let mut user = None;
    let mut nonce = None;
    for attr in bare.split(',') {
        if let Some(u) = attr.strip_prefix("n=") {
            user = Some(unescape_user(u).ok_or(ScramError::Malformed("bad username escaping"))?);
        } else if let Some(r) = attr.strip_prefix("r=") {
            nonce = Some(r.to_string());
        } else if attr.starts_with("m=") {
            return Err(ScramError::Malformed("mandatory extensions are not supported"));
        }
        // other attributes (Kafka's extensions such as tokenauth) are ignored
    }
    let user = user.filter(|u| !u.is_empty()).ok_or(ScramError::Malformed("no username"))?;
    let nonce = nonce.filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic() && c != ','));
    let nonce = nonce.ok_or(ScramError::Malformed("no client nonce"))?;
    if let Some(a) = authzid.strip_prefix("a=") {
        if unescape_user(a).as_deref() != Some(user.as_str()) {
            return Err(ScramError::Malformed("the authorization id must be the username"));
        }
    }
    Ok(ClientFirst { user, nonce, gs2_header: format!("{cb},{authzid},"), bare: bare.to_string() })
}

/// One server side of an exchange, after the client-first message.
#[derive(Debug)]
pub struct ScramServer {
    mech: Mechanism,
    first: ClientFirst,
    /// None: the user is unknown; the exchange continues with a made-up salt and fails at the
    /// proof, so the answer does not tell which users exist.
    cred: Option<ScramCredential>,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    pub fn new(mech: Mechanism, first: ClientFirst, cred: Option<ScramCredential>) -> ScramServer {
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        let nonce = format!("{}{}", first.nonce, B64.encode(bytes).replace(['+', '/', '='], "x"));
        let (salt, iterations) = match &cred {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (mech.hash(first.user.as_bytes())[..16].to_vec(), MIN_ITERATIONS),
        };
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        ScramServer { mech, first, cred, server_first, nonce }
    }

    pub fn user(&self) -> &str {
        &self.first.user
    }

    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final message; returns the server-final message.
    pub fn finish(&self, msg: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                binding = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        let binding = B64
            .decode(binding.ok_or(ScramError::Malformed("no channel binding"))?)
            .map_err(|_| ScramError::Malformed("bad channel binding"))?;
        if binding != self.first.gs2_header.as_bytes() {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64.decode(proof).map_err(|_| ScramError::Malformed("bad proof"))?;
        let fail = ScramError::InvalidCredentials(self.mech.name());
        let cred = self.cred.as_ref().ok_or(fail.clone())?;
        let auth_message = format!("{},{},{}", self.first.bare, self.server_first, without_proof);
        let signature = self.mech.hmac(&cred.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(fail);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !constant_time_eq(&self.mech.hash(&client_key), &cred.stored_key) {
            return Err(fail);
        }
        Ok(format!("v={}", B64.encode(self.mech.hmac(&cred.server_key, auth_message.as_bytes()))))
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A client side of the exchange, for tests.
    pub fn client_final(mech: Mechanism, password: &str, client_first_bare: &str, server_first: &str) -> (String, Vec<u8>) {
        let attrs: Vec<&str> = server_first.split(',').collect();
        let nonce = attrs[0].strip_prefix("r=").unwrap();
        let salt = B64.decode(attrs[1].strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = attrs[2].strip_prefix("i=").unwrap().parse().unwrap();
        let salted = mech.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = mech.hmac(&salted, b"Client Key");
        let stored = mech.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = mech.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_sig = mech.hmac(&mech.hmac(&salted, b"Server Key"), auth.as_bytes());
        (format!("{without_proof},p={}", B64.encode(proof)), server_sig)
    }

    #[test]
    fn rfc_7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil", 4096 iterations.
        let mech = Mechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = mech.salted_password(b"pencil", &salt, 4096);
        let cred = ScramCredential::from_salted(mech, &salted, salt, 4096);
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let mut server = ScramServer::new(mech, first, Some(cred));
        // the RFC's server nonce, to replay its exchange exactly
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        server.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", server.nonce);
        let fin = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(server.finish(fin.as_bytes()).unwrap(), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        let bad = fin.replace("p=dH", "p=eH");
        assert_eq!(server.finish(bad.as_bytes()), Err(ScramError::InvalidCredentials("SCRAM-SHA-256")));
    }

    #[test]
    fn an_exchange_with_each_mechanism_and_the_failures() {
        for mech in [Mechanism::Sha256, Mechanism::Sha512] {
            let cred = ScramCredential::from_password(mech, "s3cret", 4096);
            assert!(cred.matches_password(mech, "s3cret") && !cred.matches_password(mech, "s3cret!"));
            let bare = "n=al=2Cice,r=abcdef";
            let first = parse_client_first(format!("n,,{bare}").as_bytes()).unwrap();
            assert_eq!(first.user, "al,ice");
            let server = ScramServer::new(mech, first.clone(), Some(cred.clone()));
            let (fin, server_sig) = client_final(mech, "s3cret", bare, server.server_first());
            assert_eq!(server.finish(fin.as_bytes()).unwrap(), format!("v={}", B64.encode(server_sig)));
            let (wrong, _) = client_final(mech, "guess", bare, server.server_first());
            assert!(matches!(server.finish(wrong.as_bytes()), Err(ScramError::InvalidCredentials(_))));
            // an unknown user is refused at the proof, with the same answer shape
            let unknown = ScramServer::new(mech, first, None);
            let (fin, _) = client_final(mech, "s3cret", bare, unknown.server_first());
            assert!(matches!(unknown.finish(fin.as_bytes()), Err(ScramError::InvalidCredentials(_))));
            // a replayed final message of another exchange has the wrong nonce
            let other = ScramServer::new(mech, parse_client_first(format!("n,,{bare}").as_bytes()).unwrap(), Some(cred));
            assert_eq!(other.finish(wrong.as_bytes()), Err(ScramError::Malformed("nonce does not match")));
        }
    }

    #[test]
    fn malformed_client_first_messages() {
        for bad in ["", "n,,", "n,,r=x", "n,,n=u", "p=tls-unique,,n=u,r=x", "n,a=other,n=u,r=x", "n,,n=u=zz,r=x", "n,,m=1,n=u,r=x"] {
            assert!(parse_client_first(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(parse_client_first(&[0xff, 0xfe]).is_err());
        assert!(parse_client_first(b"n,a=u,n=u,r=x,tokenauth=true").is_ok());
    }
}

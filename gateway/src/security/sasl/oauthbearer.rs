//! OAUTHBEARER (RFC 7628, Kafka's KIP-255) with JWT validation: the client's first message
//! carries `auth=Bearer <token>`; the token must be a JWS signed with one of the configured keys
//! (HS256/384/512 with a shared secret, RS256 or ES256 with a PEM public key; `none` is never
//! accepted), not expired and already valid (`exp`, `nbf`, with `clock_skew_ms`), from the
//! configured issuer and for the configured audience when those are set. The principal is the
//! `principal_claim` (default `sub`). A refused token gets RFC 7628's error challenge first, as
//! Kafka sends it; the exchange then fails.

use std::path::PathBuf;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::scram::Mechanism;
use crate::security::constant_time_eq;

/// The `[sasl.oauthbearer]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OauthConfig {
    /// Base64 shared secrets for HS256/HS384/HS512 tokens.
    pub hmac_secrets: Vec<String>,
    /// PEM public keys (SubjectPublicKeyInfo) for RS256 and ES256 tokens.
    pub public_key_files: Vec<PathBuf>,
    /// The `iss` a token must carry (any when empty).
    pub issuer: String,
    /// A value the token's `aud` must contain (any when empty).
    pub audience: String,
    /// The claim naming the principal.
    pub principal_claim: String,
    pub clock_skew_ms: u64,
}

impl Default for OauthConfig {
    fn default() -> Self {
        OauthConfig {
            hmac_secrets: Vec::new(),
            public_key_files: Vec::new(),
            issuer: String::new(),
            audience: String::new(),
            principal_claim: "sub".into(),
            clock_skew_ms: 30_000,
        }
    }
}

/// The keys tokens are checked with, loaded once.
#[derive(Debug, Clone, Default)]
pub struct Validator {
    cfg: OauthConfig,
    secrets: Vec<Vec<u8>>,
    /// (algorithm family, subjectPublicKey bytes).
    public_keys: Vec<(&'static str, Vec<u8>)>,
}

/// The subjectPublicKey of a PEM SubjectPublicKeyInfo, and whether it is RSA or EC.
fn spki(pem: &str) -> Result<(&'static str, Vec<u8>), String> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64.trim()).map_err(|e| format!("not a PEM public key: {e}"))?;
    let (_, spki, _) = crate::security::principal::der(&der).ok_or("not a SubjectPublicKeyInfo")?;
    let (_, alg, rest) = crate::security::principal::der(spki).ok_or("no algorithm")?;
    let (_, bits, _) = crate::security::principal::der(rest).ok_or("no key")?;
    let key = bits.get(1..).ok_or("empty key")?.to_vec(); // past the unused-bits byte
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let (_, oid, _) = crate::security::principal::der(alg).ok_or("no algorithm id")?;
    match oid {
        RSA => Ok(("RS", key)),
        EC => Ok(("ES", key)),
        _ => Err("only RSA and EC P-256 public keys are supported".into()),
    }
}

impl Validator {
    pub fn new(cfg: &OauthConfig) -> anyhow::Result<Validator> {
        let secrets = cfg
            .hmac_secrets
            .iter()
            .map(|s| STANDARD.decode(s).map_err(|e| anyhow::anyhow!("sasl.oauthbearer.hmac_secrets: not base64: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut public_keys = Vec::new();
        for f in &cfg.public_key_files {
            let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            public_keys.push(spki(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?);
        }
        anyhow::ensure!(
            !secrets.is_empty() || !public_keys.is_empty(),
            "OAUTHBEARER needs sasl.oauthbearer.hmac_secrets or public_key_files"
        );
        Ok(Validator { cfg: cfg.clone(), secrets, public_keys })
    }

    fn signature_ok(&self, alg: &str, signed: &[u8], sig: &[u8]) -> bool {
        use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256};
        let hmac = |m: Mechanism| self.secrets.iter().any(|k| constant_time_eq(&m.hmac(k, signed), sig));
        match alg {
            "HS256" => hmac(Mechanism::Sha256),
            "HS512" => hmac(Mechanism::Sha512),
            "RS256" => self
                .public_keys
                .iter()
                .any(|(kind, k)| *kind == "RS" && UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, k).verify(signed, sig).is_ok()),
            "ES256" => self
                .public_keys
                .iter()
                .any(|(kind, k)| *kind == "ES" && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, k).verify(signed, sig).is_ok()),
            _ => false,
        }
    }

    /// The principal name and the token's expiry (ms since the epoch), or why it is refused.
    pub fn validate(&self, token: &str, now_ms: u64) -> Result<(String, u64), String> {
        let parts: Vec<&str> = token.split('.').collect();
        let [h, p, sig] = parts.as_slice() else { return Err("the token is not a signed JWT".into()) };
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| "the token is not base64url".to_string());
        let header: serde_json::Value = serde_json::from_slice(&decode(h)?).map_err(|_| "bad token header")?;
        let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("none");
        if !self.signature_ok(alg, format!("{h}.{p}").as_bytes(), &decode(sig)?) {
            return Err(format!("the token's signature ({alg}) does not verify with any configured key"));
        }
        let claims: serde_json::Value = serde_json::from_slice(&decode(p)?).map_err(|_| "bad token claims")?;
        let skew = self.cfg.clock_skew_ms;
        let secs = |name: &str| claims.get(name).and_then(|v| v.as_f64()).map(|s| (s * 1000.0) as u64);
        let exp = secs("exp").ok_or("the token has no exp")?;
        if exp.saturating_add(skew) <= now_ms {
            return Err("the token expired".into());
        }
        if secs("nbf").is_some_and(|nbf| nbf > now_ms.saturating_add(skew)) {
            return Err("the token is not valid yet".into());
        }
        if !self.cfg.issuer.is_empty() && claims.get("iss").and_then(|i| i.as_str()) != Some(self.cfg.issuer.as_str()) {
            return Err("the token is from another issuer".into());
        }
        if !self.cfg.audience.is_empty() {
            let ok = match claims.get("aud") {
                Some(serde_json::Value::String(a)) => *a == self.cfg.audience,
                Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(self.cfg.audience.as_str())),
                _ => false,
            };
            if !ok {
                return Err("the token is for another audience".into());
            }
        }
        let principal = claims.get(&self.cfg.principal_claim).and_then(|s| s.as_str()).filter(|s| !s.is_empty());
        let principal = principal.ok_or_else(|| format!("the token has no {} claim", self.cfg.principal_claim))?;
        Ok((principal.to_string(), exp))
    }
}

/// The bearer token of a client's first OAUTHBEARER message (`n,,\x01auth=Bearer T\x01\x01`).
pub fn bearer_token(msg: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(msg).map_err(|_| "not UTF-8")?;
    let (gs2, rest) = text.split_once('\x01').ok_or("no key-value pairs")?;
    if !gs2.starts_with("n,") && !gs2.starts_with("y,") {
        return Err("bad GS2 header".into());
    }
    rest.split('\x01')
        .find_map(|kv| kv.strip_prefix("auth="))
        .and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "no auth=Bearer value".into())
}

/// RFC 7628's error challenge for a refused token.
pub fn error_challenge() -> Vec<u8> {
    br#"{"status":"invalid_token"}"#.to_vec()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn hs256(secret: &[u8], claims: &serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = Mechanism::Sha256.hmac(secret, format!("{h}.{p}").as_bytes());
        format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn validator() -> Validator {
        let cfg = OauthConfig {
            hmac_secrets: vec![STANDARD.encode(b"top-secret")],
            issuer: "https://idp".into(),
            audience: "kafka".into(),
            ..Default::default()
        };
        Validator::new(&cfg).unwrap()
    }

    #[test]
    fn tokens_are_checked_for_signature_time_issuer_and_audience() {
        let v = validator();
        let now = 1_700_000_000_000u64;
        let good = serde_json::json!({"sub": "alice", "iss": "https://idp", "aud": ["kafka", "x"], "exp": now / 1000 + 60});
        assert_eq!(v.validate(&hs256(b"top-secret", &good), now), Ok(("alice".into(), now + 60_000)));
        assert!(v.validate(&hs256(b"other", &good), now).unwrap_err().contains("signature"));
        let mut c = good.clone();
        c["exp"] = serde_json::json!(now / 1000 - 120);
        assert_eq!(v.validate(&hs256(b"top-secret", &c), now), Err("the token expired".into()));
        c["exp"] = serde_json::json!(now / 1000 - 10);
        assert!(v.validate(&hs256(b"top-secret", &c), now).is_ok(), "within the clock skew");
        let mut c = good.clone();
        c["aud"] = serde_json::json!("other");
        assert!(v.validate(&hs256(b"top-secret", &c), now).is_err());
        let mut c = good.clone();
        c["iss"] = serde_json::json!("https://evil");
        assert!(v.validate(&hs256(b"top-secret", &c), now).is_err());
        let mut c = good.clone();
        c["nbf"] = serde_json::json!(now / 1000 + 3600);
        assert!(v.validate(&hs256(b"top-secret", &c), now).is_err());
        // alg none, with or without a signature, is never a valid token
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let p = URL_SAFE_NO_PAD.encode(good.to_string());
        assert!(v.validate(&format!("{h}.{p}."), now).is_err());
        let mut c = good.clone();
        c["exp"] = serde_json::json!(1e300);
        c["nbf"] = serde_json::json!(-1e300);
        assert!(v.validate(&hs256(b"top-secret", &c), now).is_ok(), "extreme times neither overflow nor panic");
        for junk in ["", "a.b", "a.b.c", "...."] {
            assert!(v.validate(junk, now).is_err());
        }
    }

    #[test]
    fn the_bearer_token_of_the_client_message() {
        assert_eq!(bearer_token(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01"), Ok("abc.def.ghi".into()));
        assert_eq!(bearer_token(b"n,a=alice,\x01host=x\x01auth=Bearer t\x01\x01"), Ok("t".into()));
        assert!(bearer_token(b"n,,\x01auth=Basic t\x01\x01").is_err());
        assert!(bearer_token(b"garbage").is_err());
    }
}

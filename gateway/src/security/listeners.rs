//! Named listeners, as Kafka's `listeners`, `advertised.listeners` and
//! `listener.security.protocol.map` describe them: the main one (`listen`, named `listener_name`,
//! speaking `listener_protocol`) and any number of `[[listeners]]`, each with its bind address,
//! the address clients are told, and its security protocol. Every gateway registers the
//! advertised address of each of its listeners, so Metadata, FindCoordinator and
//! DescribeCluster answer a client with the addresses of the listener it came in on.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Kafka's security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[clap(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

/// One `[[listeners]]` entry of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// The listener's name (Kafka's listener name: letters, digits, `_` and `-`).
    pub name: String,
    /// The address it binds.
    pub listen: SocketAddr,
    /// host:port clients are told to connect to; `listen` when empty.
    #[serde(default)]
    pub advertised: String,
    #[serde(default)]
    pub protocol: SecurityProtocol,
}

/// A listener as the server runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    /// The host and port clients are told.
    pub host: String,
    pub port: i32,
}

impl Default for Listener {
    fn default() -> Self {
        Listener { name: "PLAINTEXT".into(), protocol: SecurityProtocol::Plaintext, host: String::new(), port: 0 }
    }
}

/// Splits `host:port` (the host may be a bracketed IPv6 address).
pub fn parse_host_port(s: &str) -> Option<(String, i32)> {
    let (h, p) = s.rsplit_once(':')?;
    let p = p.parse::<u16>().ok()?;
    (!h.is_empty()).then(|| (h.trim_start_matches('[').trim_end_matches(']').to_string(), p as i32))
}

/// Replaces `${NAME}` with the environment variable NAME (empty when unset), so one config file
/// serves every pod of a StatefulSet (`${POD_NAME}.gw-headless:9093`).
pub fn expand_env(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        match rest[i + 2..].find('}') {
            Some(j) => {
                out.push_str(&std::env::var(&rest[i + 2..i + 2 + j]).unwrap_or_default());
                rest = &rest[i + 3 + j..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The advertised address: `advertised` (with `${VAR}` expanded) when set, else the bind address.
pub fn advertised_or(advertised: &str, listen: SocketAddr) -> (String, i32) {
    parse_host_port(&expand_env(advertised)).unwrap_or_else(|| (listen.ip().to_string(), listen.port() as i32))
}

/// A listener name as Kafka accepts it.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_as_kafka_spells_them() {
        #[derive(Deserialize)]
        struct T {
            p: SecurityProtocol,
        }
        for (s, p) in [("PLAINTEXT", SecurityProtocol::Plaintext), ("SASL_SSL", SecurityProtocol::SaslSsl)] {
            let t: T = toml::from_str(&format!("p = \"{s}\"")).unwrap();
            assert_eq!(t.p, p);
            assert_eq!(p.name(), s);
        }
        assert!(toml::from_str::<T>("p = \"TLS\"").is_err());
        assert!(SecurityProtocol::SaslSsl.tls() && SecurityProtocol::SaslSsl.sasl());
        assert!(!SecurityProtocol::Ssl.sasl() && !SecurityProtocol::SaslPlaintext.tls());
    }

    #[test]
    fn host_port() {
        assert_eq!(parse_host_port("kafka.example:9093"), Some(("kafka.example".into(), 9093)));
        assert_eq!(parse_host_port("[::1]:9093"), Some(("::1".into(), 9093)));
        assert_eq!(parse_host_port("nohost"), None);
        assert_eq!(parse_host_port(":9"), None);
        assert_eq!(advertised_or("", "127.0.0.1:9092".parse().unwrap()), ("127.0.0.1".into(), 9092));
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(expand_env("${PATH}.headless:9093"), format!("{path}.headless:9093"));
        assert_eq!(expand_env("${WALGW_TEST_UNSET}x${"), "x${");
        assert!(valid_name("SASL_SSL") && valid_name("external-1") && !valid_name("a b") && !valid_name(""));
    }
}

//! The client side of SCRAM (RFC 5802) with SHA-256 and SHA-512 (RFC 7677), as Kafka uses it:
//! no channel binding (`n,,`), no authorization identity, no SASLprep (Kafka's own clients do
//! not normalise either).
//!
//! A pure state machine: [`ScramClient::client_first`], then
//! [`ScramClient::client_final`] with the server-first message, then
//! [`ScramClient::verify_server_final`] with the server-final message. A wrong nonce, a
//! malformed message, an iteration count outside
//! [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`], a server error (`e=`) or a wrong server signature
//! is an [`ErrorKind::Authentication`] error.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};

use crate::error::{Error, ErrorKind, Result};

/// The smallest iteration count accepted from a server (RFC 7677 and Kafka: 4096).
pub const MIN_ITERATIONS: u32 = 4096;
/// The largest iteration count accepted from a server. Kafka itself refuses credentials above
/// 16384; the bound keeps a hostile server from making the client spin.
pub const MAX_ITERATIONS: u32 = 100_000;

/// The hash a SCRAM mechanism uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScramHash {
    Sha256,
    Sha512,
    /// Only for RFC 5802's test vector.
    #[cfg(test)]
    Sha1,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[&[u8]]) -> Result<Vec<u8>> {
        fn run<M: Mac + KeyInit>(key: &[u8], data: &[&[u8]]) -> Result<Vec<u8>> {
            let mut mac =
                <M as KeyInit>::new_from_slice(key).map_err(|_| auth_error("HMAC key rejected"))?;
            for d in data {
                mac.update(d);
            }
            Ok(mac.finalize().into_bytes().to_vec())
        }
        match self {
            ScramHash::Sha256 => run::<Hmac<sha2::Sha256>>(key, data),
            ScramHash::Sha512 => run::<Hmac<sha2::Sha512>>(key, data),
            #[cfg(test)]
            ScramHash::Sha1 => run::<Hmac<sha1::Sha1>>(key, data),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            ScramHash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => sha2::Sha512::digest(data).to_vec(),
            #[cfg(test)]
            ScramHash::Sha1 => sha1::Sha1::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, iterations)` of RFC 5802 (PBKDF2 with HMAC as the PRF and one
    /// block). CPU-heavy for large counts: call it off the async runtime.
    pub(crate) fn salted_password(
        self,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Vec<u8>> {
        let mut u = self.hmac(password, &[salt, &1u32.to_be_bytes()])?;
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &[&u])?;
            for (o, x) in out.iter_mut().zip(&u) {
                *o ^= x;
            }
        }
        Ok(out)
    }
}

fn auth_error(message: impl Into<String>) -> Error {
    Error::with_message(ErrorKind::Authentication, message)
}

/// `saslname` of RFC 5802: `=` and `,` escaped.
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// What the server-first message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerFirst {
    pub nonce: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// The SCRAM client of one authentication exchange.
#[derive(Debug)]
pub(crate) struct ScramClient {
    hash: ScramHash,
    client_first_bare: String,
    client_nonce: String,
    /// The expected server signature, once the client-final message is made.
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// A client for `username` with a fresh random nonce.
    pub(crate) fn new(hash: ScramHash, username: &str) -> Result<ScramClient> {
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw)
            .map_err(|e| auth_error(format!("no random bytes for the SCRAM nonce: {e}")))?;
        Ok(Self::with_nonce(hash, username, &B64.encode(raw)))
    }

    /// A client with a given nonce (test vectors).
    pub(crate) fn with_nonce(hash: ScramHash, username: &str, nonce: &str) -> ScramClient {
        ScramClient {
            hash,
            client_first_bare: format!("n={},r={nonce}", escape_name(username)),
            client_nonce: nonce.to_owned(),
            server_signature: None,
        }
    }

    /// The client-first message.
    pub(crate) fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Parses and checks the server-first message.
    pub(crate) fn parse_server_first(&self, msg: &[u8]) -> Result<ServerFirst> {
        let msg = std::str::from_utf8(msg)
            .map_err(|_| auth_error("SCRAM server-first message is not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for (i, attr) in msg.split(',').enumerate() {
            let (k, v) = attr.split_once('=').ok_or_else(|| {
                auth_error(format!("malformed SCRAM server-first message: {msg:?}"))
            })?;
            match (i, k) {
                (0, "m") => {
                    return Err(auth_error(
                        "SCRAM server-first message requires an unsupported extension (m=)",
                    ));
                }
                (0, "e") => return Err(auth_error(format!("SCRAM server error: {v}"))),
                (0, "r") => nonce = Some(v),
                (1, "s") => {
                    salt = Some(
                        B64.decode(v)
                            .map_err(|_| auth_error("SCRAM salt is not valid base64"))?,
                    )
                }
                (2, "i") => {
                    iterations =
                        Some(v.parse::<u32>().map_err(|_| {
                            auth_error(format!("SCRAM iteration count {v:?} invalid"))
                        })?)
                }
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(auth_error(format!(
                "SCRAM server-first message lacks r=, s= or i=: {msg:?}"
            )));
        };
        if !nonce.starts_with(&self.client_nonce) || nonce.len() <= self.client_nonce.len() {
            return Err(auth_error(
                "SCRAM server nonce does not extend the client nonce",
            ));
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(auth_error(format!(
                "SCRAM iteration count {iterations} outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"
            )));
        }
        if salt.is_empty() {
            return Err(auth_error("SCRAM salt is empty"));
        }
        Ok(ServerFirst {
            nonce: nonce.to_owned(),
            salt,
            iterations,
        })
    }

    /// The client-final message, from the server-first message (raw) and the salted password
    /// (from [`ScramHash::salted_password`] with the parsed salt and iteration count).
    pub(crate) fn client_final(
        &mut self,
        server_first_raw: &[u8],
        server_first: &ServerFirst,
        salted_password: &[u8],
    ) -> Result<String> {
        let server_first_raw = std::str::from_utf8(server_first_raw)
            .map_err(|_| auth_error("SCRAM server-first message is not UTF-8"))?;
        let without_proof = format!("c=biws,r={}", server_first.nonce);
        let auth_message = format!(
            "{},{server_first_raw},{without_proof}",
            self.client_first_bare
        );
        let h = self.hash;
        let client_key = h.hmac(salted_password, &[b"Client Key"])?;
        let stored_key = h.hash(&client_key);
        let client_signature = h.hmac(&stored_key, &[auth_message.as_bytes()])?;
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(salted_password, &[b"Server Key"])?;
        self.server_signature = Some(h.hmac(&server_key, &[auth_message.as_bytes()])?);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: `v=` with the expected server signature. A server
    /// error (`e=`) or a wrong signature (the server does not know the password: it may be an
    /// impostor) is an authentication error.
    pub(crate) fn verify_server_final(&self, msg: &[u8]) -> Result<()> {
        let msg = std::str::from_utf8(msg)
            .map_err(|_| auth_error("SCRAM server-final message is not UTF-8"))?;
        let first = msg.split(',').next().unwrap_or_default();
        if let Some(e) = first.strip_prefix("e=") {
            return Err(auth_error(format!("SCRAM server error: {e}")));
        }
        let Some(v) = first.strip_prefix("v=") else {
            return Err(auth_error(format!(
                "malformed SCRAM server-final message: {msg:?}"
            )));
        };
        let got = B64
            .decode(v)
            .map_err(|_| auth_error("SCRAM server signature is not valid base64"))?;
        let Some(want) = &self.server_signature else {
            return Err(auth_error(
                "SCRAM server-final message before the client-final message",
            ));
        };
        // Constant time is not needed for a value the server sends us, but costs nothing.
        let same = got.len() == want.len()
            && got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !same {
            return Err(auth_error(
                "SCRAM server signature is wrong: the broker does not know the password",
            ));
        }
        Ok(())
    }
}

/// Not API: the fuzzing entry for the SCRAM server messages. `data` holds the server-first
/// and server-final messages, split at the first 0 byte; a SHA-256 or SHA-512 client (by the
/// first byte's low bit) with a fixed nonce parses the first, makes its client-final message
/// (the salted password with one iteration whatever the message says: the parsing and checks
/// are under test, not PBKDF2), and checks the second.
#[doc(hidden)]
pub fn fuzz_server_messages(data: &[u8]) -> Result<()> {
    let hash = if data.first().is_some_and(|b| b & 1 == 1) {
        ScramHash::Sha512
    } else {
        ScramHash::Sha256
    };
    let (first, last) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut client = ScramClient::with_nonce(hash, "user", "fyko+d2lbbFgONRv9qkxdawL");
    let server_first = client.parse_server_first(first)?;
    let salted = hash.salted_password(b"pencil", &server_first.salt, 1)?;
    let _ = client.client_final(first, &server_first, &salted)?;
    client.verify_server_final(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_entry_reaches_the_server_final_check() {
        // The fuzz seed: RFC 5802's server messages. The client-final is made with one
        // iteration, so the server's signature cannot match: the check that ends the exchange.
        let seed = include_bytes!("../../../tests/corpus/sasl_scram/rfc5802-server-messages.bin");
        let e = fuzz_server_messages(seed).unwrap_err();
        assert!(e.to_string().contains("signature is wrong"), "{e}");
        assert!(
            fuzz_server_messages(b"r=x,s=QQ==,i=4096").is_err(),
            "foreign nonce"
        );
    }

    /// Runs a whole client exchange against the messages of an RFC example.
    #[allow(clippy::too_many_arguments)]
    fn run(
        hash: ScramHash,
        user: &str,
        password: &str,
        client_nonce: &str,
        server_first: &str,
        want_client_first: &str,
        want_client_final: &str,
        server_final: &str,
    ) {
        let mut c = ScramClient::with_nonce(hash, user, client_nonce);
        assert_eq!(c.client_first(), want_client_first);
        let sf = c.parse_server_first(server_first.as_bytes()).unwrap();
        let salted = hash
            .salted_password(password.as_bytes(), &sf.salt, sf.iterations)
            .unwrap();
        let cf = c
            .client_final(server_first.as_bytes(), &sf, &salted)
            .unwrap();
        assert_eq!(cf, want_client_final);
        c.verify_server_final(server_final.as_bytes()).unwrap();
    }

    #[test]
    fn rfc7677_sha256_vector() {
        run(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        );
    }

    #[test]
    fn rfc5802_sha1_vector() {
        run(
            ScramHash::Sha1,
            "user",
            "pencil",
            "fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        );
    }

    #[test]
    fn wrong_server_signature_is_an_authentication_error() {
        let mut c = ScramClient::with_nonce(ScramHash::Sha256, "user", "rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let sf = c.parse_server_first(server_first.as_bytes()).unwrap();
        let salted = ScramHash::Sha256
            .salted_password(b"pencil", &sf.salt, sf.iterations)
            .unwrap();
        c.client_final(server_first.as_bytes(), &sf, &salted)
            .unwrap();
        let e = c
            .verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Authentication);
        assert!(e.is_fatal());
        let e = c.verify_server_final(b"e=invalid-proof").unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Authentication);
    }

    #[test]
    fn server_first_checks() {
        let c = ScramClient::with_nonce(ScramHash::Sha512, "u,s=er", "abc");
        assert_eq!(c.client_first(), "n,,n=u=2Cs=3Der,r=abc");
        let bad = |m: &str| {
            let e = c.parse_server_first(m.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Authentication, "{m}");
        };
        bad("r=xyzdef,s=QSXCR+Q6sek8bf92,i=4096"); // nonce not ours
        bad("r=abc,s=QSXCR+Q6sek8bf92,i=4096"); // no server part
        bad("r=abcdef,s=QSXCR+Q6sek8bf92,i=100"); // too few iterations
        bad("r=abcdef,s=QSXCR+Q6sek8bf92,i=4000000000"); // too many
        bad("r=abcdef,s=QSXCR+Q6sek8bf92,i=-1");
        bad("r=abcdef,s=!!!,i=4096");
        bad("m=ext,r=abcdef,s=QSXCR+Q6sek8bf92,i=4096");
        bad("e=other-error");
        bad("garbage");
        let ok = c
            .parse_server_first(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096")
            .unwrap();
        assert_eq!(ok.iterations, 4096);
        assert_eq!(ok.nonce, "abcdef");
    }

    #[test]
    fn random_nonces_differ() {
        let a = ScramClient::new(ScramHash::Sha256, "u").unwrap();
        let b = ScramClient::new(ScramHash::Sha256, "u").unwrap();
        assert_ne!(a.client_first(), b.client_first());
        assert!(!a.client_nonce.contains(','));
    }
}

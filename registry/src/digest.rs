//! Content digests (`algorithm:hex`) and the streaming hashers that verify them.
//!
//! Every byte Berth stores is addressed by its digest, so parsing is strict:
//! only `sha256` and `sha512` with lowercase hex of the exact length are
//! accepted, which also makes a digest safe to use as a path component.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// A supported digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the default for OCI content.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears in a digest string.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// A validated content digest such as `sha256:e3b0c442...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a string is not a valid digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestParseError {
    /// No `algorithm:` prefix.
    #[error("digest {0:?} has no algorithm prefix")]
    MissingAlgorithm(String),
    /// An algorithm other than sha256 or sha512.
    #[error("digest algorithm {0:?} is not supported (sha256, sha512)")]
    UnsupportedAlgorithm(String),
    /// Wrong length or characters other than lowercase hex.
    #[error("digest {0:?} is not lowercase hex of the algorithm's length")]
    InvalidEncoding(String),
}

impl Digest {
    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes` with `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(bytes);
        hasher.finish()
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestParseError::MissingAlgorithm(s.to_owned()))?;
        let algorithm = Algorithm::from_name(alg)
            .ok_or_else(|| DigestParseError::UnsupportedAlgorithm(alg.to_owned()))?;
        let valid = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(DigestParseError::InvalidEncoding(s.to_owned()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::{self, MANY};
    use proptest::prelude::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::of(Algorithm::Sha256, b""), d);
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(matches!(
            "abc".parse::<Digest>(),
            Err(DigestParseError::MissingAlgorithm(_))
        ));
        assert!(matches!(
            "md5:abc".parse::<Digest>(),
            Err(DigestParseError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestParseError::InvalidEncoding(_))
        ));
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        assert!(upper.parse::<Digest>().is_err());
        let traversal = format!("sha256:../{}", &EMPTY[10..]);
        assert!(traversal.parse::<Digest>().is_err());
    }

    #[test]
    fn sha512_round_trip() {
        let d = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_eq!(d.hex().len(), 128);
    }

    #[test]
    fn property_digests_of_the_grammar_parse() {
        let digests = prop_oneof!["sha256:[a-f0-9]{64}", "sha512:[a-f0-9]{128}"];
        properties::check("digests of the grammar parse", MANY, digests, |text| {
            let digest: Digest = text
                .parse()
                .map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(digest.to_string(), text);
            Ok(())
        });
    }

    #[test]
    fn property_only_well_formed_digests_parse() {
        let text = prop_oneof![
            "(sha256|sha512|sha384|SHA256|)(:|::)?[a-fA-F0-9g]{0,130}",
            any::<String>()
        ];
        properties::check("only well-formed digests parse", MANY, text, |text| {
            if let Ok(digest) = text.parse::<Digest>() {
                prop_assert_eq!(digest.to_string(), text.as_str());
                prop_assert_eq!(digest.hex().len(), digest.algorithm().hex_len());
                prop_assert!(
                    digest
                        .hex()
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                );
            }
            Ok(())
        });
    }
}

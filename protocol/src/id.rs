//! Identifiers of nodes, device classes and devices.
//!
//! Each identifier is exactly one MQTT topic level, so that broker ACL patterns (mosquitto's `%u`,
//! `%c`) can fence a client to its own subtree, and so that an identifier can never smuggle a `/`, a
//! wildcard or a NUL into a topic. The rule: 1 to [`MAX_ID_LEN`] bytes of `[A-Za-z0-9._-]`, not
//! starting with `.` (which also keeps `.` and `..` out when an agent uses an id as a file name).
//!
//! Kubernetes object names (DNS-1123 subdomains) satisfy the rule as long as they are at most 64
//! characters long.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest identifier, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid identifier (or class-topic level).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("empty identifier")]
    Empty,
    /// The string is longer than [`MAX_ID_LEN`] bytes.
    #[error("identifier is {len} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong {
        /// Length of the refused string, in bytes.
        len: usize,
    },
    /// The string starts with `.`.
    #[error("identifier starts with '.'")]
    LeadingDot,
    /// The string holds a character outside `[A-Za-z0-9._-]`.
    #[error(
        "identifier has {ch:?} at byte {index}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
    )]
    BadChar {
        /// The first refused character.
        ch: char,
        /// Its byte offset.
        index: usize,
    },
}

/// Checks `s` against the identifier rule (see the module documentation).
pub fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { len: s.len() });
    }
    if s.starts_with('.') {
        return Err(IdError::LeadingDot);
    }
    match s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some((index, ch)) => Err(IdError::BadChar { ch, index }),
        None => Ok(()),
    }
}

macro_rules! level_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `id` (see the [module documentation](self)).
            pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
                let id = id.into();
                check_id(&id)?;
                Ok(Self(id))
            }

            /// The identifier as a string (also its topic level).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(id: String) -> Result<Self, IdError> {
                Self::new(id)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;

            fn try_from(id: &str) -> Result<Self, IdError> {
                Self::new(id)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(id: &str) -> Result<Self, IdError> {
                Self::new(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

level_id! {
    /// An edge node: the Kubernetes node name, and the agent's MQTT username on the cloud broker.
    NodeId
}

level_id! {
    /// A device class: the name of its DeviceClass object.
    ClassId
}

level_id! {
    /// A device, unique within its class: its MQTT username on the device broker.
    DeviceId
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn accepts_valid_ids() {
        for id in [
            "a",
            "node-1",
            "k3s.edge_07",
            "A.B-C_d",
            "0",
            &"x".repeat(MAX_ID_LEN),
        ] {
            assert_eq!(check_id(id), Ok(()), "{id:?}");
            assert_eq!(NodeId::new(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn refuses_invalid_ids() {
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(
            check_id(&"x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong {
                len: MAX_ID_LEN + 1
            })
        );
        assert_eq!(check_id(".hidden"), Err(IdError::LeadingDot));
        assert_eq!(check_id(".."), Err(IdError::LeadingDot));
        for (id, ch, index) in [
            ("a/b", '/', 1),
            ("+", '+', 0),
            ("dev#", '#', 3),
            ("nul\0", '\0', 3),
            ("sp ace", ' ', 2),
            ("$SYS", '$', 0),
            ("émile", 'é', 0),
            ("a*", '*', 1),
        ] {
            assert_eq!(check_id(id), Err(IdError::BadChar { ch, index }), "{id:?}");
        }
    }

    #[test]
    fn serde_validates() {
        let ok: ClassId = codec::decode(&codec::encode("thermo"), 64).unwrap();
        assert_eq!(ok.as_str(), "thermo");
        let bad = codec::decode::<ClassId>(&codec::encode("a/#"), 64);
        assert!(
            matches!(bad, Err(codec::CodecError::Invalid { .. })),
            "{bad:?}"
        );
    }
}

//! Validated volume and driver names.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Characters a volume or driver name may never contain (the original module's list, plus every
/// whitespace and control character): names become file names and program arguments.
pub const FORBIDDEN_NAME_CHARS: &[char] = &[
    '%', '/', ':', ';', '<', '>', '|', '`', '$', '\'', '"', '?', '^', '&', '{', '}', '[', ']', '\\',
];

/// Why a name was refused. The caller adds which variable or field held it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("is empty; give a name")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("is {len} bytes long; at most {MAX_NAME_LEN} bytes are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name contains a character that is not allowed.
    #[error("contains {found:?}, which is not allowed (no whitespace, control characters or any of % / : ; < > | ` $ ' \" ? ^ & {{ }} [ ] \\)")]
    ForbiddenChar {
        /// The first offending character.
        found: char,
    },
    /// The name is `.` or `..`, which cannot name a file.
    #[error("cannot be {0:?}")]
    Dots(&'static str),
}

fn check_name(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: s.len() });
    }
    if let Some(found) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || FORBIDDEN_NAME_CHARS.contains(c))
    {
        return Err(NameError::ForbiddenChar { found });
    }
    match s {
        "." => Err(NameError::Dots(".")),
        ".." => Err(NameError::Dots("..")),
        _ => Ok(()),
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// Validates `s` as a name: non-empty, at most [`MAX_NAME_LEN`] bytes, none of
            /// [`FORBIDDEN_NAME_CHARS`], no whitespace or control characters, not `.` or `..`.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                check_name(&s)?;
                Ok(Self(s))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A volume name, valid by construction (see [`VolumeName::new`]).
    VolumeName
);
name_type!(
    /// A driver (plugin or built-in backend) name, valid by construction: it can never escape a
    /// plugin directory or be taken for an option.
    DriverName
);

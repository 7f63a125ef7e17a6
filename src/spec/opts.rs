//! Validated, ordered volume options (`DVDI_VOLUME_OPTS`, `driver_options`).

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an option was refused. The caller adds which variable or field held it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptError {
    /// A `DVDI_VOLUME_OPTS` item has no `=`.
    #[error("item {item:?} has no '='; write key=value pairs separated by ','")]
    MissingEquals {
        /// The item as written.
        item: String,
    },
    /// A key is empty.
    #[error("an option has an empty key; write key=value")]
    EmptyKey,
    /// A key contains `=`.
    #[error("key {key:?} contains '='")]
    EqualsInKey {
        /// The key.
        key: String,
    },
    /// A key or value contains `,`, NUL or a control character.
    #[error("{what} {text:?} contains {found:?}; keys and values may not contain ',', NUL or control characters")]
    ForbiddenChar {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// The offending key or value.
        text: String,
        /// The offending character.
        found: char,
    },
    /// The same key twice.
    #[error("key {key:?} is given twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
}

/// Ordered `key=value` options passed to a driver on create and mount, valid by construction:
/// keys are non-empty and unique and contain no `=`; neither keys nor values contain `,`, NUL or
/// control characters. Values may hold paths and URLs: nothing is ever passed through a shell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VolumeOpts(Vec<(String, String)>);

fn forbidden(c: char) -> bool {
    c == ',' || c.is_control()
}

impl VolumeOpts {
    /// No options.
    pub fn empty() -> Self {
        Self(Vec::new())
    }

    /// Validates key/value pairs, keeping their order.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, OptError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            let (key, value) = (k.into(), v.into());
            if key.is_empty() {
                return Err(OptError::EmptyKey);
            }
            if key.contains('=') {
                return Err(OptError::EqualsInKey {
                    key: super::shown(&key),
                });
            }
            for (what, text) in [("key", &key), ("value", &value)] {
                if let Some(found) = text.chars().find(|&c| forbidden(c)) {
                    return Err(OptError::ForbiddenChar {
                        what,
                        text: super::shown(text),
                        found,
                    });
                }
            }
            if out.iter().any(|(k, _)| *k == key) {
                return Err(OptError::DuplicateKey {
                    key: super::shown(&key),
                });
            }
            out.push((key, value));
        }
        Ok(Self(out))
    }

    /// Parses the `DVDI_VOLUME_OPTS` form: `key=value` items separated by `,`. The first `=` of an
    /// item separates key from value. An empty string means no options.
    pub fn parse(s: &str) -> Result<Self, OptError> {
        if s.is_empty() {
            return Ok(Self::empty());
        }
        let mut pairs = Vec::new();
        for item in s.split(',') {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| OptError::MissingEquals {
                    item: item.to_owned(),
                })?;
            pairs.push((k, v));
        }
        Self::from_pairs(pairs)
    }

    /// The options in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// True when there are no options.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of options.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for VolumeOpts {
    /// The `DVDI_VOLUME_OPTS` form, `k1=v1,k2=v2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl Serialize for VolumeOpts {
    /// A JSON object whose keys keep the options' order.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for VolumeOpts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OptsVisitor;
        impl<'de> Visitor<'de> for OptsVisitor {
            type Value = VolumeOpts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string options")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<VolumeOpts, A::Error> {
                let mut pairs: Vec<(String, String)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    pairs.push((k, v));
                }
                VolumeOpts::from_pairs(pairs).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_map(OptsVisitor)
    }
}

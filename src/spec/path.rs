//! Validated container paths: where a task sees a volume.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a container path was refused. The caller adds which variable or field held it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("is empty")]
    Empty,
    /// The environment form must be absolute.
    #[error("is not absolute; give an absolute path such as /data")]
    NotAbsolute,
    /// A `..` component.
    #[error("contains a '..' component; give a path without '..'")]
    DotDot,
    /// A NUL byte.
    #[error("contains a NUL byte")]
    Nul,
    /// The path names the container's root (or the sandbox itself).
    #[error("names the root of the container (or the sandbox itself); give a directory below it")]
    Root,
    /// Longer than a path may be (PATH_MAX).
    #[error("is {len} bytes long; a path may have at most {MAX_PATH_LEN} bytes")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A component longer than a file name may be (NAME_MAX).
    #[error(
        "has a component of {len} bytes; a file name may have at most {MAX_COMPONENT_LEN} bytes"
    )]
    ComponentTooLong {
        /// The component's length.
        len: usize,
    },
}

/// Longest container path accepted, in bytes (Linux PATH_MAX less the terminating NUL).
pub const MAX_PATH_LEN: usize = 4095;

/// Longest path component accepted, in bytes (Linux NAME_MAX).
pub const MAX_COMPONENT_LEN: usize = 255;

/// A normalised container path: no `.` or `..` components, no repeated or trailing `/`, no NUL.
///
/// Absolute paths are inside the container's root filesystem (or, for a container on the host
/// filesystem, host paths); relative ones (only from `ContainerInfo`) are relative to the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerPath(PathBuf);

impl ContainerPath {
    /// Validates and normalises an absolute path (the environment form's rule).
    pub fn absolute(s: &str) -> Result<Self, PathError> {
        let p = Self::any(s)?;
        if p.is_absolute() {
            Ok(p)
        } else {
            Err(PathError::NotAbsolute)
        }
    }

    /// Validates and normalises an absolute or sandbox-relative path (the `ContainerInfo` form).
    pub fn any(s: &str) -> Result<Self, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.contains('\0') {
            return Err(PathError::Nul);
        }
        if s.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong { len: s.len() });
        }
        let mut out = PathBuf::new();
        for c in Path::new(s).components() {
            match c {
                Component::RootDir => out.push("/"),
                Component::CurDir => {}
                Component::ParentDir => return Err(PathError::DotDot),
                Component::Normal(n) if n.len() > MAX_COMPONENT_LEN => {
                    return Err(PathError::ComponentTooLong { len: n.len() })
                }
                Component::Normal(n) => out.push(n),
                Component::Prefix(_) => unreachable!("no path prefixes on unix"),
            }
        }
        if out.as_os_str().is_empty() || out == Path::new("/") {
            return Err(PathError::Root);
        }
        Ok(Self(out))
    }

    /// True for a path inside the container's root, false for a sandbox-relative one.
    pub fn is_absolute(&self) -> bool {
        self.0.is_absolute()
    }

    /// The normalised path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The path relative to the root it is resolved under: without the leading `/` for an absolute
    /// path, unchanged for a sandbox-relative one.
    pub fn relative(&self) -> &Path {
        self.0.strip_prefix("/").unwrap_or(&self.0)
    }
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

impl Serialize for ContainerPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Built from a &str, so always valid UTF-8.
        s.serialize_str(&self.0.to_string_lossy())
    }
}

impl<'de> Deserialize<'de> for ContainerPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::any(&s).map_err(serde::de::Error::custom)
    }
}

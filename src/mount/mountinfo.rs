//! The host's mount table, from `/proc/<pid>/mountinfo`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfoEntry {
    /// Mount id.
    pub id: u32,
    /// Parent mount id.
    pub parent: u32,
    /// `major:minor` of the device.
    pub dev: String,
    /// The root of the mount within its file system.
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options.
    pub options: String,
    /// File system type.
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// Per-superblock options.
    pub super_options: String,
}

/// Decodes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, …).
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn path_field(field: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

fn parse_line(line: &str) -> Option<MountInfoEntry> {
    let mut fields = line.split(' ');
    let id = fields.next()?.parse().ok()?;
    let parent = fields.next()?.parse().ok()?;
    let dev = fields.next()?.to_owned();
    let root = path_field(fields.next()?);
    let mount_point = path_field(fields.next()?);
    let options = fields.next()?.to_owned();
    // Optional fields end with a lone "-".
    for f in fields.by_ref() {
        if f == "-" {
            break;
        }
    }
    let fstype = fields.next()?.to_owned();
    let source = String::from_utf8_lossy(&unescape(fields.next()?)).into_owned();
    let super_options = fields.next().unwrap_or("").to_owned();
    Some(MountInfoEntry {
        id,
        parent,
        dev,
        root,
        mount_point,
        options,
        fstype,
        source,
        super_options,
    })
}

/// Parses mountinfo text; malformed lines are skipped (the kernel writes none).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfoEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// Reads and parses a mountinfo file (`/proc/self/mountinfo` in production; a parameter so tests
/// can read another namespace's or a fake).
pub fn read_mountinfo(path: &Path) -> std::io::Result<Vec<MountInfoEntry>> {
    let bytes = std::fs::read(path)?;
    Ok(parse_mountinfo(&String::from_utf8_lossy(&bytes)))
}

/// Whether something is mounted exactly at `path`.
pub fn is_mount_point(table: &[MountInfoEntry], path: &Path) -> bool {
    table.iter().any(|e| e.mount_point == path)
}

/// Whether `path` is the root of a mount, asked of the kernel directly (statx
/// `STATX_ATTR_MOUNT_ROOT`, Linux 5.8+): exact for bind mounts too, and far cheaper than reading
/// mountinfo. `None` when the kernel cannot say (older kernels) or `path` cannot be examined.
pub fn is_mount_root(path: &Path) -> Option<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a writable statx buffer; both outlive
    // the call.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: statx returned 0, so it filled the buffer (which was zeroed before in any case).
    let st = unsafe { buf.assume_init() };
    let bit = u64::from(libc::STATX_ATTR_MOUNT_ROOT.unsigned_abs());
    (st.stx_attributes_mask & bit != 0).then_some(st.stx_attributes & bit != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_line_with_optional_fields_and_escapes() {
        let t = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n";
        let e = &parse_mountinfo(t)[0];
        assert_eq!(e.id, 36);
        assert_eq!(e.parent, 35);
        assert_eq!(e.mount_point, Path::new("/mnt/with space"));
        assert_eq!(e.fstype, "ext3");
        assert_eq!(e.source, "/dev/root");
        assert!(is_mount_point(
            std::slice::from_ref(e),
            Path::new("/mnt/with space")
        ));
    }

    #[test]
    fn decodes_backslash_and_newline_escapes() {
        assert_eq!(unescape("a\\134b\\012c"), b"a\\b\nc");
        assert_eq!(unescape("trailing\\04"), b"trailing\\04");
    }

    proptest! {
        #[test]
        fn never_panics(text in ".{0,300}") {
            let _ = parse_mountinfo(&text);
        }

        #[test]
        fn escaped_paths_round_trip(bytes in prop::collection::vec(1u8..=255, 1..40)) {
            let mut escaped = String::new();
            for b in &bytes {
                if matches!(b, b' ' | b'\t' | b'\n' | b'\\') || !b.is_ascii() || b.is_ascii_control() {
                    escaped.push_str(&format!("\\{b:03o}"));
                } else {
                    escaped.push(char::from(*b));
                }
            }
            let line = format!("1 0 0:1 / /{escaped} rw - tmpfs none rw");
            let e = &parse_mountinfo(&line)[0];
            let mut want = b"/".to_vec();
            want.extend(&bytes);
            prop_assert_eq!(e.mount_point.as_os_str().as_encoded_bytes(), &want[..]);
        }
    }
}

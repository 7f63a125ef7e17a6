//! The host's mount table, from `/proc/<pid>/mountinfo`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo (proc(5)): one mount as the reading process's namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfoEntry {
    /// Mount id.
    pub id: u32,
    /// Parent mount id.
    pub parent: u32,
    /// Major number of the device (`st_dev`) of the file system.
    pub major: u32,
    /// Minor number of the device.
    pub minor: u32,
    /// The directory of the file system that is the root of this mount (not `/` for a bind of a
    /// subdirectory).
    pub root: PathBuf,
    /// Where it is mounted, relative to the reading process's root.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw` or `ro`, `nosuid`, …), comma-separated.
    pub options: String,
    /// The optional fields: propagation (`shared:N`, `master:N`, `propagate_from:N`,
    /// `unbindable`); none for a private mount.
    pub optional_fields: Vec<String>,
    /// File system type (`ext4`, `fuse.bindfs`, …).
    pub fstype: String,
    /// Mount source (a device, or whatever the file system was given); bytes, as file names are.
    pub source: OsString,
    /// Per-superblock options, as the kernel wrote them.
    pub super_options: String,
}

impl MountInfoEntry {
    /// Whether the per-mount options include `option` (`ro`, `nosuid`, …).
    pub fn has_option(&self, option: &str) -> bool {
        self.options.split(',').any(|o| o == option)
    }

    /// Whether the mount is read-only.
    pub fn is_read_only(&self) -> bool {
        self.has_option("ro")
    }
}

/// Decodes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, …). The kernel
/// escapes every backslash, so a backslash followed by three octal digits is always an escape;
/// anything else is kept as it is rather than refused.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(byte) = field.get(i + 1..i + 4).and_then(octal_byte) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Three octal digits naming one byte (at most `\377`).
fn octal_byte(digits: &[u8]) -> Option<u8> {
    digits.iter().try_fold(0u8, |acc, d| {
        let v = d.checked_sub(b'0').filter(|v| *v < 8)?;
        acc.checked_mul(8)?.checked_add(v)
    })
}

fn path_field(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

fn text_field(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}

fn number(field: &[u8]) -> Option<u32> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn parse_line(line: &[u8]) -> Option<MountInfoEntry> {
    let mut fields = line.split(|b| *b == b' ');
    let id = number(fields.next()?)?;
    let parent = number(fields.next()?)?;
    let (major, minor) = {
        let dev = fields.next()?;
        let colon = dev.iter().position(|b| *b == b':')?;
        (number(&dev[..colon])?, number(&dev[colon + 1..])?)
    };
    let root = path_field(fields.next()?);
    let mount_point = path_field(fields.next()?);
    let options = text_field(fields.next()?);
    // Optional fields end with a lone "-".
    let mut optional_fields = Vec::new();
    loop {
        let f = fields.next()?;
        if f == b"-" {
            break;
        }
        optional_fields.push(text_field(f));
    }
    let fstype = text_field(&unescape(fields.next()?));
    let source = OsString::from_vec(unescape(fields.next()?));
    let super_options = fields.next().map(text_field).unwrap_or_default();
    Some(MountInfoEntry {
        id,
        parent,
        major,
        minor,
        root,
        mount_point,
        options,
        optional_fields,
        fstype,
        source,
        super_options,
    })
}

/// Parses mountinfo text (as bytes or a string); malformed lines are skipped (the kernel writes
/// none). Paths are decoded to the exact bytes of the file names, UTF-8 or not.
pub fn parse_mountinfo<T: AsRef<[u8]> + ?Sized>(text: &T) -> Vec<MountInfoEntry> {
    text.as_ref()
        .split(|b| *b == b'\n')
        .filter_map(parse_line)
        .collect()
}

/// Reads and parses a mountinfo file (`/proc/self/mountinfo` in production; a parameter so tests
/// can read another namespace's, a thread's, or a fake).
pub fn read_mountinfo(path: &Path) -> std::io::Result<Vec<MountInfoEntry>> {
    Ok(parse_mountinfo(&std::fs::read(path)?))
}

/// Whether something is mounted exactly at `path` (as the table's reader sees paths).
pub fn is_mount_point(table: &[MountInfoEntry], path: &Path) -> bool {
    table.iter().any(|e| e.mount_point == path)
}

/// Whether the file system at `path` is mounted read-only where this process sees it (statvfs
/// `ST_RDONLY`); `false` when `path` cannot be examined.
pub fn is_read_only(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
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
    use std::os::unix::ffi::OsStrExt;

    /// What the kernel does to a path in mountinfo (`mangle` in fs/proc_namespace.c).
    fn escape(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bytes {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\\') {
                out.extend(format!("\\{b:03o}").bytes());
            } else {
                out.push(*b);
            }
        }
        out
    }

    #[test]
    fn parses_a_line_with_optional_fields_and_escapes() {
        let t = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n";
        let e = &parse_mountinfo(t)[0];
        assert_eq!((e.id, e.parent, e.major, e.minor), (36, 35, 98, 0));
        assert_eq!(e.root, Path::new("/mnt1"));
        assert_eq!(e.mount_point, Path::new("/mnt/with space"));
        assert_eq!(e.options, "rw,noatime");
        assert_eq!(e.optional_fields, ["master:1", "shared:2"]);
        assert_eq!(e.fstype, "ext3");
        assert_eq!(e.source, "/dev/root");
        assert_eq!(e.super_options, "rw,errors=continue");
        assert!(!e.is_read_only() && e.has_option("noatime"));
        assert!(is_mount_point(
            std::slice::from_ref(e),
            Path::new("/mnt/with space")
        ));
        assert!(!is_mount_point(std::slice::from_ref(e), Path::new("/mnt")));
    }

    #[test]
    fn a_private_read_only_mount_has_no_optional_fields() {
        let e = &parse_mountinfo("7 1 0:5 / /ro ro,relatime - tmpfs none rw")[0];
        assert!(e.optional_fields.is_empty());
        assert!(e.is_read_only());
    }

    #[test]
    fn decodes_backslash_and_newline_escapes() {
        assert_eq!(unescape(b"a\\134b\\012c"), b"a\\b\nc");
        // Not escapes: too short, not octal, more than a byte.
        assert_eq!(unescape(b"trailing\\04"), b"trailing\\04");
        assert_eq!(unescape(b"\\08x"), b"\\08x");
        assert_eq!(unescape(b"\\400"), b"\\400");
        assert_eq!(unescape(b"\\377"), [0xff]);
    }

    #[test]
    fn non_utf8_file_names_keep_their_bytes() {
        let line = b"1 0 0:1 / /data/\xff\xfe rw - tmpfs n\xe9 rw";
        let e = &parse_mountinfo(&line[..])[0];
        assert_eq!(e.mount_point.as_os_str().as_bytes(), b"/data/\xff\xfe");
        assert_eq!(e.source.as_bytes(), b"n\xe9");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for line in [
            "",
            "x 0 0:1 / / rw - tmpfs none rw",
            "1 0 01 / / rw - tmpfs none rw",
            "1 0 0:1 / / rw shared:1",
            "1 0 0:1 / / rw - tmpfs",
        ] {
            assert!(parse_mountinfo(line).is_empty(), "{line:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_mountinfo(&bytes);
        }

        #[test]
        fn never_panics_on_near_misses(
            text in "([0-9]{1,12}|[ :/\\-]|\\\\[0-9]{0,4}|[a-z,=]{1,6}|\n){0,60}"
        ) {
            let _ = parse_mountinfo(&text);
        }

        #[test]
        fn escaped_paths_round_trip(
            mount_point in prop::collection::vec(1u8..=255, 1..40),
            root in prop::collection::vec(1u8..=255, 0..20),
            source in prop::collection::vec(1u8..=255, 1..20),
        ) {
            let mut line = b"1 0 0:1 /".to_vec();
            line.extend(escape(&root));
            line.extend(b" /");
            line.extend(escape(&mount_point));
            line.extend(b" rw shared:3 - tmpfs ");
            line.extend(escape(&source));
            line.extend(b" rw\n");
            let table = parse_mountinfo(&line);
            prop_assert_eq!(table.len(), 1);
            let e = &table[0];
            prop_assert_eq!(&e.root.as_os_str().as_bytes()[1..], &root[..]);
            prop_assert_eq!(&e.mount_point.as_os_str().as_bytes()[1..], &mount_point[..]);
            prop_assert_eq!(e.source.as_bytes(), &source[..]);
            prop_assert_eq!(&e.optional_fields, &["shared:3".to_owned()]);
        }
    }
}

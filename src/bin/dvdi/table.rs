//! Plain-text tables: whole values when the output goes to a file or a pipe; on a terminal, fit
//! to its width by wrapping the last column (where errors are), never by cutting it.

use std::io::IsTerminal;

/// The width assumed for a terminal that does not say its own.
pub const DEFAULT_WIDTH: usize = 100;

/// Fewest columns the last column is wrapped into beside the others; with less room it goes on
/// lines of its own below its row.
const MIN_WRAP: usize = 30;

/// Indent of a last column put on lines of its own.
const INDENT: usize = 4;

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);

/// The width tables on stdout must fit: the terminal's, or `None` (no limit) when stdout is not
/// a terminal, so piped and redirected output keeps whole values.
pub fn stdout_width() -> Option<usize> {
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into `size`, which outlives the call; fd 1 is open
    // (it was just found to be a terminal). No safe wrapper for this ioctl exists in our
    // dependencies.
    let asked = unsafe { tiocgwinsz(1, &mut size) };
    Some(match asked {
        Ok(_) if size.ws_col > 0 => usize::from(size.ws_col),
        _ => DEFAULT_WIDTH,
    })
}

/// Renders a header and rows as aligned columns, two spaces apart. With a `width`, a row wider
/// than it has its last column wrapped at word boundaries (beside the other columns when at least
/// 30 columns are left there, else on indented lines below the row); nothing is ever cut.
pub fn render(header: &[&str], rows: &[Vec<String>], width: Option<usize>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let Some((last, rest)) = row.split_last() else {
            out.push('\n');
            continue;
        };
        let mut prefix = String::new();
        for (cell, w) in rest.iter().zip(&widths) {
            prefix.push_str(&format!("{cell:<w$}  "));
        }
        let offset = prefix.chars().count();
        let fits = |limit: usize| offset + last.chars().count() <= limit;
        match width {
            Some(limit) if !fits(limit) => {
                if limit.saturating_sub(offset) >= MIN_WRAP {
                    for (i, line) in wrap(last, limit - offset).iter().enumerate() {
                        let lead = if i == 0 {
                            prefix.clone()
                        } else {
                            " ".repeat(offset)
                        };
                        out.push_str(format!("{lead}{line}").trim_end());
                        out.push('\n');
                    }
                } else {
                    out.push_str(prefix.trim_end());
                    out.push('\n');
                    let room = limit.saturating_sub(INDENT).max(MIN_WRAP);
                    for line in wrap(last, room) {
                        out.push_str(&" ".repeat(INDENT));
                        out.push_str(&line);
                        out.push('\n');
                    }
                }
            }
            _ => {
                out.push_str(format!("{prefix}{last}").trim_end());
                out.push('\n');
            }
        }
    }
    out
}

/// Splits `text` into lines of at most `room` characters, at spaces where it can, inside a word
/// only when the word alone is longer.
fn wrap(text: &str, room: usize) -> Vec<String> {
    let room = room.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        let used = line.chars().count();
        if used > 0 && used + 1 + word.len() <= room {
            line.push(' ');
            line.extend(&word);
            continue;
        }
        if used > 0 {
            lines.push(std::mem::take(&mut line));
        }
        while word.len() > room {
            lines.push(word.drain(..room).collect());
        }
        line.extend(word);
    }
    lines.push(line);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        let error = format!("driver \"dead\": activate failed: {}", "cause ".repeat(30));
        vec![vec!["dead".to_owned(), "unix:///x.sock".to_owned(), error]]
    }

    #[test]
    fn without_a_width_values_are_whole() {
        let t = render(&["NAME", "ADDRESS", "ERROR"], &rows(), None);
        assert!(t.contains(rows()[0][2].trim_end()), "{t}");
        assert_eq!(t.lines().count(), 2);
    }

    #[test]
    fn with_a_width_the_last_column_wraps_and_loses_nothing() {
        for width in [100, 60, 20] {
            let t = render(&["NAME", "ADDRESS", "ERROR"], &rows(), Some(width));
            let room = width.max(MIN_WRAP + INDENT);
            assert!(
                t.lines().all(|l| l.chars().count() <= room),
                "{width}:\n{t}"
            );
            let words: Vec<&str> = t.split_whitespace().collect();
            let rows = rows();
            let want: Vec<&str> = ["NAME", "ADDRESS", "ERROR", "dead", "unix:///x.sock"]
                .into_iter()
                .chain(rows[0][2].split_whitespace())
                .collect();
            assert_eq!(words, want, "{width}:\n{t}");
        }
    }

    #[test]
    fn words_longer_than_the_room_are_split_not_dropped() {
        assert_eq!(wrap("abcdefg hi", 3), ["abc", "def", "g", "hi"]);
        assert_eq!(wrap("", 5), [""]);
    }
}

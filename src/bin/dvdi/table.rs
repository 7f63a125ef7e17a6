//! Plain-text tables that fit a 100-column terminal.

/// The widest a table may be.
pub const MAX_WIDTH: usize = 100;

/// Renders a header and rows as aligned columns, two spaces apart. When the table would be wider
/// than [`MAX_WIDTH`], the last column is cut and ends with `…`.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        let line = line.trim_end();
        if line.chars().count() > MAX_WIDTH {
            let cut: String = line.chars().take(MAX_WIDTH - 1).collect();
            out.push_str(&cut);
            out.push('…');
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

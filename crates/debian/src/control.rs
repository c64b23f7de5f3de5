//! deb822 control data: paragraphs of `Field: value` lines with continuation lines.

use std::borrow::Cow;

/// One paragraph: fields in file order. Field names compare case-insensitively. A value
/// on one line is borrowed from the text; only one with continuation lines is copied (a
/// Packages index is 56 MB, and copying every value was most of reading it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph<'a> {
    pub fields: Vec<(&'a str, Cow<'a, str>)>,
}

impl<'a> Paragraph<'a> {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

/// Splits `text` into paragraphs. Continuation lines (starting with a space or tab) are
/// joined to the field with a newline; a line of a single `.` stands for an empty line.
pub fn paragraphs(text: &str) -> impl Iterator<Item = Paragraph<'_>> {
    let mut lines = text.lines().peekable();
    std::iter::from_fn(move || {
        // Skip blank lines between paragraphs.
        while lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        lines.peek()?;
        let mut para = Paragraph::default();
        while let Some(line) = lines.peek() {
            if line.trim().is_empty() {
                break;
            }
            let line = lines.next().unwrap();
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = para.fields.last_mut() {
                    let value = value.to_mut();
                    let cont = line.trim();
                    value.push('\n');
                    if cont != "." {
                        value.push_str(cont);
                    }
                }
            } else if line.starts_with('#') {
                continue;
            } else if let Some((k, v)) = line.split_once(':') {
                para.fields.push((k.trim(), Cow::Borrowed(v.trim())));
            }
        }
        Some(para)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_continuations() {
        let text =
            "Package: a\nDescription: short\n long line\n .\n more\n\n\nPackage: b\nversion: 1\n";
        let ps: Vec<_> = paragraphs(text).collect();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("description"), Some("short\nlong line\n\nmore"));
        assert_eq!(ps[1].get("Version"), Some("1"));
    }
}

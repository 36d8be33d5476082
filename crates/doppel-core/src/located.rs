//! Problems found in a text file a person wrote (twin specs, scenarios), each with the file,
//! line, column and key it is about, so every message says where and what.
//! This module only formats positions; it knows nothing of any file format.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The key the problem is about, such as `asset[2].parent`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )
    }
}

/// Collects problems found in one text, turning byte offsets into lines and columns.
pub struct Problems<'a> {
    text: &'a str,
    file: &'a Path,
    pub list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub fn new(text: &'a str, file: &'a Path) -> Self {
        Problems {
            text,
            file,
            list: Vec::new(),
        }
    }

    /// Records a problem at the byte range `span` of the text.
    pub fn push(
        &mut self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = line_and_column(self.text, span.start);
        self.list.push(Problem {
            file: self.file.to_owned(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

//! Symbolized stacks, as the sinks show them and recordings keep them.

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    pub addr: u64,
    pub func: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl Frame {
    /// The function's name, or the address: what profiles group by.
    pub fn name(&self) -> String {
        self.func.clone().unwrap_or_else(|| format!("{:#x}", self.addr))
    }

    /// `func (file:line)`, or the address.
    pub fn display(&self) -> String {
        let mut s = self.func.clone().unwrap_or_else(|| format!("{:#x}", self.addr));
        if let Some(file) = &self.file {
            let base = file.rsplit('/').next().unwrap_or(file);
            match self.line {
                Some(l) => s.push_str(&format!(" ({base}:{l})")),
                None => s.push_str(&format!(" ({base})")),
            }
        }
        s
    }
}

/// A blocked thread's stacks, innermost frame first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Stack {
    pub kernel: Vec<Frame>,
    pub user: Vec<Frame>,
    /// The user stack does not reach a thread or process entry point: frames are likely
    /// missing (code without frame pointers).
    pub user_truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_display() {
        let f = Frame { addr: 0x10, func: Some("main".into()), file: Some("/src/a/main.rs".into()), line: Some(7) };
        assert_eq!(f.display(), "main (main.rs:7)");
        let f = Frame { addr: 0x10, func: None, file: None, line: None };
        assert_eq!(f.display(), "0x10");
    }
}

//! The dashboard in a real browser: Debian's Chromium driven by Playwright from the project's
//! virtual environment (scripts/browser-deps.sh installs both; scripts/test.sh runs it). The
//! checks themselves are in tests/browser/dashboard.py; they save the screenshots the README
//! shows into docs/screenshots/.

use std::process::Command;

use crate::common::manifest_dir;

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let root = manifest_dir().join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/browser-deps.sh (scripts/test.sh does) to install Chromium \
         and Playwright for this test",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("tests/browser/dashboard.py"))
        .arg(env!("CARGO_BIN_EXE_doppel"))
        .arg(root.join("docs/screenshots"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("every check passed"), "{said}");
}

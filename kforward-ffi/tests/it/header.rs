//! `include/kforward.h` is what the pinned cbindgen generates from this crate right now.

use std::path::Path;

/// The header as cbindgen generates it from the sources.
fn generate() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn header_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/kforward.h");
    let fresh = generate();
    if std::env::var_os("KFORWARD_BLESS_HEADER").is_some() {
        std::fs::write(&path, &fresh).expect("write the header");
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()))
            + 1;
        panic!(
            "{} is stale: it differs from what cbindgen generates from the sources, first at \
             line {line}.\nRegenerate it with:\n\n    KFORWARD_BLESS_HEADER=1 cargo test -p \
             kforward-ffi --test it header\n\nand commit the result.",
            path.display()
        );
    }
}

#[test]
fn every_function_and_type_is_in_the_header_with_docs() {
    let header = generate();
    for name in [
        "kf_version",
        "kf_result_name",
        "kf_last_error_message",
        "kf_string_free",
        "kf_runtime_new",
        "kf_runtime_free",
        "kf_forward_start",
        "kf_forward_wait_ready",
        "kf_forward_status",
        "kf_forward_stop",
        "kf_forward_free",
    ] {
        let at = [" ", "*"]
            .iter()
            .find_map(|before| header.find(&format!("{before}{name}(")))
            .unwrap_or_else(|| panic!("{name} is not in the header"));
        let before = header[..at].trim_end();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let above = header[..line_start].trim_end();
        assert!(
            above.ends_with("*/"),
            "{name} has no doc comment above it in the header"
        );
    }
    for ty in [
        "typedef struct kf_runtime kf_runtime;",
        "typedef struct kf_forward kf_forward;",
        "typedef enum kf_result {",
        "typedef void (*kf_event_callback)(void *userdata, const char *event_json);",
    ] {
        assert!(header.contains(ty), "the header lacks {ty}");
    }
    assert!(header.contains("KF_OK = 0,"));
}

//! The kftray config loader (`kforward_core::config`): any text as a config file; entries that
//! load, written back as JSON (as `kforward` saves them), load again unchanged.
#![no_main]

use kforward_core::config::{load_config_document, load_configs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = load_config_document(text) {
        let _ = e.to_string();
    }
    match load_configs(text) {
        Ok(configs) => {
            for c in &configs {
                let _ = (c.label(), c.to_spec().map_err(|e| e.to_string()));
            }
            let written = serde_json::to_string(&configs).expect("configs serialize");
            let again = load_configs(&written).expect("written configs load");
            assert_eq!(again, configs);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

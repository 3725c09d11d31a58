//! `NO_PROXY` rules (`kforward_relay::no_proxy::NoProxy`, from the environment and from
//! `--direct`): any list and host; each rule written back parses to itself.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kforward_relay::no_proxy::NoProxy;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    list: String,
    host: String,
    port: u16,
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(input) = Input::arbitrary(&mut u) else {
        return;
    };
    let rules = NoProxy::parse(&input.list);
    if let Some(rule) = rules.matching(&input.host, input.port) {
        assert!(rule.matches(&input.host, input.port));
    }
    for rule in rules.rules() {
        let written = rule.to_string();
        let again = NoProxy::parse(&written);
        assert_eq!(again.rules(), std::slice::from_ref(rule), "{written:?}");
    }
});

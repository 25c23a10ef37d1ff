//! The shard map loaders: JSON (admin API) and TOML (config file), then validation. Any
//! input is parsed or rejected with errors; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shard_map::ShardMap;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(map) = ShardMap::from_json(&text) {
        if let Ok(valid) = map.validated(&["c1", "c2", "c3"]) {
            // A valid map survives its own round trip.
            let again = ShardMap::from_json(&valid.to_json()).expect("own JSON parses");
            assert!(again.validated(&["c1", "c2", "c3"]).is_ok(), "own JSON validates");
        }
    }
    if let Ok(config) = toml::from_str::<switchyard::Config>(&text) {
        let _ = config.validate();
    }
});

//! Every example in `config/` parses and validates; broken configurations list every problem.

use std::path::Path;

use switchyard::Config;

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 1, "no example configs found in {}", dir.display());
}

#[test]
fn invalid_config_lists_every_problem() {
    let text = r#"
        default_cluster = "c9"
        [router]
        users = []
        pool_size = 0
        [admin]
        listen = "nowhere"
        [orchestrator]
        user = "o"
        password = "p"
        [[clusters]]
        name = "c1"
        nodes = ["127.0.0.1:1", "bad"]
        leader = "127.0.0.1:2"
        [[keyspaces]]
        name = "k"
        default_cluster = "c7"
    "#;
    let config: Config = toml::from_str(text).unwrap();
    let problems = config.validate();
    let all = problems.join("\n");
    for expected in [
        "users",
        "pool_size",
        "admin.listen",
        "`bad`",
        "leader",
        "c7",
        "c9",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
    }
}

#[test]
fn unknown_keys_are_rejected() {
    let text = r#"
        [router]
        users = [{ name = "a", password = "b" }]
        colour = "blue"
        [admin]
        [orchestrator]
        user = "o"
        password = "p"
        [[clusters]]
        name = "c1"
        nodes = ["127.0.0.1:1"]
    "#;
    let err = toml::from_str::<Config>(text).unwrap_err().to_string();
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/serve.toml"))
            .unwrap();
    let config: Config = toml::from_str(&text).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("password: Secret(\"app\")"), "{shown}");
    assert!(shown.contains("***"), "{shown}");
}

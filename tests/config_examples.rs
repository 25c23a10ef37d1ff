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

/// The committed reference page is the one the code generates (regenerate it with
/// `switchyard config reference > docs/configuration.md`), and the example file shows every
/// option it lists (set or commented out).
#[test]
fn the_reference_page_is_generated_and_the_example_shows_every_option() {
    let generated = switchyard::config::reference::markdown();
    let committed = include_str!("../docs/configuration.md");
    assert!(
        committed == generated,
        "docs/configuration.md is out of date: run `switchyard config reference > \
         docs/configuration.md`"
    );
    let example = include_str!("../config/serve.toml");
    let shown = |key: &str| {
        example.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            let l = l.trim_start_matches('{').trim_start();
            l.starts_with(&format!("{key} =")) || l.contains(&format!(" {key} = "))
        })
    };
    let paths = switchyard::config::reference::option_paths();
    assert!(paths.len() > 40, "{paths:?}");
    assert!(paths.contains(&"router.listen".to_string()), "{paths:?}");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !shown(p.rsplit('.').next().unwrap()))
        .collect();
    assert!(
        missing.is_empty(),
        "options not shown in config/serve.toml: {missing:?}"
    );
}

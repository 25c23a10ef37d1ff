//! Backend accounts of other authentication plugins than `mysql_native_password`: a user
//! configured in `router.users` whose MariaDB account is `IDENTIFIED VIA ed25519` works
//! through the router (the router answers the server's `client_ed25519` challenge with the
//! configured password), on new, reset and re-authenticated connections; a configured
//! password that is not the account's gets the server's own 1045.

mod common;

use common::{query_one, TestEnv};
use mysql_async::prelude::*;
use mysql_async::Conn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ed25519_backend_account_works_through_the_router() {
    let env = TestEnv::start_with(1, 0, |cfg| {
        for (name, password) in [("edu", "ed-pw"), ("edwrong", "not-its-password")] {
            cfg.router.users.push(router::config::UserConfig {
                name: name.into(),
                password: router::config::Secret::new(password),
            });
        }
    })
    .await;
    let mut admin = env.admin_conn(env.leader_port("c1")).await;
    for sql in [
        "INSTALL PLUGIN IF NOT EXISTS ed25519 SONAME 'auth_ed25519'",
        "CREATE USER edu IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw')",
        "GRANT SELECT ON *.* TO edu",
        "CREATE USER edwrong IDENTIFIED VIA ed25519 USING PASSWORD('its-password')",
        "GRANT SELECT ON *.* TO edwrong",
    ] {
        admin.query_drop(sql).await.unwrap();
    }
    let plugin: String = query_one(
        &mut admin,
        "SELECT plugin FROM mysql.user WHERE user = 'edu'",
    )
    .await;
    assert_eq!(plugin, "ed25519");

    let port = env.router_port();
    let mut a = Conn::new(common::opts_for(port, "edu", "ed-pw", None))
        .await
        .unwrap();
    let me: String = query_one(&mut a, "SELECT CURRENT_USER()").await;
    assert_eq!(me, "edu@%");
    // Several sessions at once: each needs a backend connection of its own, each logged in
    // with the plugin.
    let mut b = Conn::new(common::opts_for(port, "edu", "ed-pw", None))
        .await
        .unwrap();
    b.query_drop("BEGIN").await.unwrap();
    let n: i64 = query_one(&mut b, "SELECT COUNT(*) FROM mysql.user").await;
    assert!(n > 0);
    let me: String = query_one(&mut a, "SELECT CURRENT_USER()").await;
    assert_eq!(me, "edu@%");
    b.query_drop("COMMIT").await.unwrap();
    // COM_RESET_CONNECTION and COM_CHANGE_USER log in again on the backend.
    a.reset().await.unwrap();
    let me: String = query_one(&mut a, "SELECT CURRENT_USER()").await;
    assert_eq!(me, "edu@%");
    a.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("edu".into()))
            .with_pass(Some("ed-pw".into())),
    )
    .await
    .unwrap();
    let me: String = query_one(&mut a, "SELECT CURRENT_USER()").await;
    assert_eq!(me, "edu@%");

    // A configured password that is not the account's: the server's 1045.
    match Conn::new(common::opts_for(port, "edwrong", "not-its-password", None)).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1045, "{e:?}"),
        Ok(mut w) => match w.query_drop("SELECT 1").await {
            Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1045, "{e:?}"),
            other => panic!("expected the server's access denied, got {other:?}"),
        },
        Err(other) => panic!("expected the server's access denied, got {other:?}"),
    }
    drop((a, b, admin));
    env.stop().await;
}

//! End-to-end tests against the real `coordinator` binary.

/// Makes each named `async fn NAME(backend: Backend)` of the module a test on
/// both stores: `MODULE::sqlite::NAME` and `MODULE::postgres::NAME` (run only
/// the PostgreSQL ones with `-- ::postgres::`).
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        /// The tests of this module on the SQLite store.
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(smoke_tests::harness::Backend::Sqlite).await
                }
            )+
        }
        /// The tests of this module on the PostgreSQL store.
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(smoke_tests::harness::Backend::Postgres).await
                }
            )+
        }
    };
}

mod admission;
mod agents;
mod api;
mod browser;
mod counts;
mod crash;
mod damaged;
mod dashboard;
mod edges;
mod events;
mod failover;
mod files_logs;
mod harness;
mod hostile;
mod http_limits;
mod leadership;
mod operator;
mod options;
mod poison;
mod protocol;
mod runner;
mod scenarios;
mod sdk;
mod sim;
mod tokens;
mod upgrade;

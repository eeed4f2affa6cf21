//! Tests of the flags that need more than clap's own checks.

use clap::Parser;

use super::{parse_advertise_url, Cli, Commands};

fn serve(args: &[&str]) -> Result<super::ServeArgs, String> {
    let mut argv = vec!["coordinator", "serve"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv)
        .map_err(|e| e.to_string())?
        .command
    {
        Commands::Serve(args) => Ok(args),
        _ => Err("not serve".into()),
    }
}

#[test]
fn the_lease_flags_default_to_1000_and_5000_and_no_advertise_url() {
    let args = serve(&[]).unwrap();
    assert_eq!((args.lease_renew_ms, args.lease_timeout_ms), (1_000, 5_000));
    assert_eq!(args.advertise_url, None);
    assert_eq!(args.check(), Ok(()));
}

#[test]
fn a_lease_timeout_under_twice_the_renewal_is_refused() {
    let args = serve(&["--lease-renew-ms", "1000", "--lease-timeout-ms", "1500"]).unwrap();
    let error = args.check().unwrap_err();
    assert!(error.contains("--lease-timeout-ms (1500)"), "{error}");
    assert!(serve(&["--lease-renew-ms", "0"]).is_err());
}

#[test]
fn an_advertise_url_is_http_or_https_with_a_host_and_maybe_a_port() {
    assert_eq!(
        parse_advertise_url("http://10.0.0.2:4000/"),
        Ok("http://10.0.0.2:4000".into())
    );
    assert_eq!(
        parse_advertise_url("https://coordinator.example"),
        Ok("https://coordinator.example".into())
    );
    for bad in [
        "10.0.0.2:4000",
        "ws://10.0.0.2:4000",
        "http://",
        "http://host:4000/api",
        "http://user@host",
        "http://host:99999",
    ] {
        assert!(parse_advertise_url(bad).is_err(), "{bad} accepted");
    }
    assert_eq!(
        serve(&["--advertise-url", "http://10.0.0.2:4000"])
            .unwrap()
            .advertise_url,
        Some("http://10.0.0.2:4000".into())
    );
}

//! Tests of the client's address handling.

use super::addr_of;

#[test]
fn a_coordinator_url_gives_its_host_and_port() {
    assert_eq!(
        addr_of("http://10.0.0.2:4000"),
        Some("10.0.0.2:4000".into())
    );
    assert_eq!(
        addr_of("http://10.0.0.2:4000/"),
        Some("10.0.0.2:4000".into())
    );
    assert_eq!(addr_of("127.0.0.1:4000"), Some("127.0.0.1:4000".into()));
    assert_eq!(addr_of("https://10.0.0.2:4000"), None);
    assert_eq!(addr_of("http://10.0.0.2:4000/api"), None);
    assert_eq!(addr_of("http://"), None);
}

//! A cluster on separate hosts, simulated: `ballastd` processes in their own
//! network namespaces, each with its own IP address, reaching each other by
//! host name over veth links. Needs root and a kernel with network
//! namespaces, so the tests are `#[ignore]`d; `make test-netns`
//! (`scripts/test-netns.sh`) runs them where that is available and says why
//! it skips them elsewhere.

mod hosts;
mod t10_three_hosts;

//! TestCluster fixture (being written).

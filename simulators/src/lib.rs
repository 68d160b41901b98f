//! Device simulators: not built yet. They will play thousands of MQTT devices of the device-module
//! classes for tests, demos and benchmarks (see the open issues).

//! The physical models behind simulated devices: what each device measures next, and how the
//! commands it receives change the world it measures (a room warms while the unit heats, CO₂
//! falls while the fan runs, a door opens when it is unlocked).
//!
//! The models are simple first-order processes with noise, enough to make handlers do what they
//! are for (switch modes, raise and clear alerts, lock people out) at realistic moments. Every
//! device draws from its own seeded generator, so a run is reproducible with `--seed`.

use edgefleet_air_quality as air_quality;
use edgefleet_guest::cbor;
use edgefleet_lock as lock;
use edgefleet_meter as meter;
use edgefleet_thermostat as thermostat;

use super::oracle::Answer;

/// A small, fast generator (xorshift64*), one per device.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that neighbouring seeds give unrelated streams; never 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The world one device measures.
#[derive(Debug, Clone)]
pub enum Model {
    Thermostat(Room),
    Meter(Load),
    Lock(Door),
    AirQuality(Air),
}

/// A heated and cooled room.
#[derive(Debug, Clone)]
pub struct Room {
    pub temp_c: f64,
    outside_c: f64,
    pub mode: thermostat::Mode,
}

/// A household's consumption.
#[derive(Debug, Clone)]
pub struct Load {
    base_w: f64,
}

/// A door with a lock and people presenting credentials at it.
#[derive(Debug, Clone)]
pub struct Door {
    allowed: Vec<String>,
    /// Unknown credentials still to come in an attempt to force the lock.
    forcing: u32,
    pub open: bool,
}

/// A room's air: occupancy, CO₂, particulates, a fan.
#[derive(Debug, Clone)]
pub struct Air {
    people: f64,
    pub co2_ppm: f64,
    pm25: f64,
    pub fan: bool,
}

impl Model {
    /// A device's world at the start; `allowed` is the lock class's allow-list.
    pub fn new(kind: super::Kind, rng: &mut Rng, allowed: &[String]) -> Model {
        match kind {
            super::Kind::Thermostat => Model::Thermostat(Room {
                temp_c: rng.range(15.0, 27.0),
                outside_c: rng.range(0.0, 32.0),
                mode: thermostat::Mode::Idle,
            }),
            super::Kind::Meter => Model::Meter(Load {
                base_w: rng.range(150.0, 2500.0),
            }),
            super::Kind::Lock => Model::Lock(Door {
                allowed: allowed.to_vec(),
                forcing: 0,
                open: false,
            }),
            super::Kind::AirQuality => Model::AirQuality(Air {
                people: rng.range(0.0, 8.0),
                co2_ppm: rng.range(420.0, 900.0),
                pm25: rng.range(3.0, 30.0),
                fan: false,
            }),
        }
    }

    /// Advances the world by `dt_s` seconds and returns the device's next message (CBOR).
    pub fn next_message(&mut self, rng: &mut Rng, dt_s: f64) -> Vec<u8> {
        let mut buf = [0u8; 128];
        let encoded = match self {
            Model::Thermostat(room) => {
                let drive = match room.mode {
                    thermostat::Mode::Heat => 0.08,
                    thermostat::Mode::Cool => -0.08,
                    thermostat::Mode::Idle => 0.0,
                };
                room.temp_c += dt_s * (0.004 * (room.outside_c - room.temp_c) + drive);
                let reading = thermostat::Reading {
                    temp_c: (room.temp_c + rng.range(-0.05, 0.05)) as f32,
                    // Now and then someone turns the dial on the device.
                    setpoint_c: rng
                        .chance(0.02)
                        .then(|| rng.range(18.0, 24.0).round() as f32),
                };
                cbor::to_slice(&reading, &mut buf)
            }
            Model::Meter(load) => {
                let spike = if rng.chance(0.01) { 6.0 } else { 1.0 };
                let watts = load.base_w * spike * rng.range(0.9, 1.1);
                let reading = meter::Reading {
                    wh: (watts * dt_s / 3600.0) as f32,
                };
                cbor::to_slice(&reading, &mut buf)
            }
            Model::Lock(door) => {
                door.open = false;
                let unknown;
                let credential = if door.forcing > 0 {
                    door.forcing -= 1;
                    unknown = format!("guess-{:04}", rng.next_u64() % 10_000);
                    unknown.as_str()
                } else if rng.chance(0.03) {
                    door.forcing = 6;
                    unknown = format!("guess-{:04}", rng.next_u64() % 10_000);
                    unknown.as_str()
                } else if door.allowed.is_empty() || rng.chance(0.1) {
                    unknown = format!("visitor-{:04}", rng.next_u64() % 10_000);
                    unknown.as_str()
                } else {
                    let at = (rng.next_u64() % door.allowed.len() as u64) as usize;
                    door.allowed[at].as_str()
                };
                cbor::to_slice(&lock::Attempt { credential }, &mut buf)
            }
            Model::AirQuality(air) => {
                air.people = (air.people + rng.range(-0.5, 0.5)).clamp(0.0, 12.0);
                let exchange = if air.fan { 0.02 } else { 0.002 };
                air.co2_ppm += dt_s * (air.people * 0.8 - exchange * (air.co2_ppm - 420.0));
                air.pm25 = (air.pm25 + rng.range(-2.0, 2.0) - if air.fan { 0.5 } else { 0.0 })
                    .clamp(1.0, 120.0);
                let reading = air_quality::Reading {
                    pm25: Some(air.pm25 as f32),
                    co2: Some(air.co2_ppm as f32),
                };
                cbor::to_slice(&reading, &mut buf)
            }
        };
        encoded.map(<[u8]>::to_vec).unwrap_or_default()
    }

    /// The device acts on a command.
    pub fn act(&mut self, answer: &Answer) {
        match (self, answer) {
            (Model::Thermostat(room), Answer::Thermostat(command)) => room.mode = command.mode,
            (Model::Lock(door), Answer::Lock(command)) => {
                door.open = *command == lock::Command::Unlock;
            }
            (Model::AirQuality(air), Answer::Ventilation(v)) => {
                air.fan = *v == air_quality::Ventilation::On;
            }
            _ => {}
        }
    }
}

/// Bytes that are no handler's message: what a broken device sends.
pub fn garbage(rng: &mut Rng) -> Vec<u8> {
    let len = 1 + (rng.next_u64() % 48) as usize;
    // 0xff first: a CBOR "break" outside an indefinite item, never a valid message.
    std::iter::once(0xff)
        .chain((1..len).map(|_| rng.next_u64() as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::Kind;

    #[test]
    fn a_heated_room_warms_and_a_cooled_one_cools() {
        let mut rng = Rng::new(7);
        let mut model = Model::new(Kind::Thermostat, &mut rng, &[]);
        let Model::Thermostat(room) = &mut model else {
            unreachable!()
        };
        room.outside_c = 20.0;
        room.temp_c = 20.0;
        let start = room.temp_c;
        model.act(&Answer::Thermostat(thermostat::Command {
            mode: thermostat::Mode::Heat,
            setpoint_c: 22.0,
        }));
        for _ in 0..10 {
            model.next_message(&mut rng, 1.0);
        }
        let Model::Thermostat(room) = &mut model else {
            unreachable!()
        };
        assert!(room.temp_c > start + 0.5, "{} after heating", room.temp_c);
        let warm = room.temp_c;
        model.act(&Answer::Thermostat(thermostat::Command {
            mode: thermostat::Mode::Cool,
            setpoint_c: 18.0,
        }));
        for _ in 0..10 {
            model.next_message(&mut rng, 1.0);
        }
        let Model::Thermostat(room) = &model else {
            unreachable!()
        };
        assert!(room.temp_c < warm - 0.5, "{} after cooling", room.temp_c);
    }

    #[test]
    fn ventilation_brings_co2_down() {
        let mut rng = Rng::new(3);
        let mut model = Model::new(Kind::AirQuality, &mut rng, &[]);
        let Model::AirQuality(air) = &mut model else {
            unreachable!()
        };
        air.co2_ppm = 2000.0;
        model.act(&Answer::Ventilation(air_quality::Ventilation::On));
        for _ in 0..60 {
            model.next_message(&mut rng, 1.0);
        }
        let Model::AirQuality(air) = &model else {
            unreachable!()
        };
        assert!(air.fan);
        assert!(
            air.co2_ppm < 2000.0,
            "{} ppm after a minute of fan",
            air.co2_ppm
        );
    }

    #[test]
    fn every_model_emits_a_message_its_handler_accepts() {
        let allowed = vec!["card-1".to_string()];
        for kind in Kind::ALL {
            let mut rng = Rng::new(11);
            let mut model = Model::new(kind, &mut rng, &allowed);
            for _ in 0..100 {
                let message = model.next_message(&mut rng, 1.0);
                let accepted = match kind {
                    Kind::Thermostat => thermostat::handle(&message, &[], None).is_ok(),
                    Kind::Meter => {
                        meter::handle(&message, &[], &mut meter::State::default()).is_ok()
                    }
                    Kind::Lock => lock::handle(&message, &[], None, 0).is_ok(),
                    Kind::AirQuality => air_quality::handle(&message, &[], None).is_ok(),
                };
                assert!(accepted, "{kind:?} message {message:02x?} refused");
            }
            let junk = garbage(&mut rng);
            assert!(thermostat::handle(&junk, &[], None).is_err());
        }
    }
}

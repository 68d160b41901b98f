//! The payload macros: [`map!`](crate::cbor::map) for CBOR maps with text keys,
//! [`text_enum!`](crate::cbor::text_enum) for enums encoded as text, and
//! [`minicbor_impls!`](crate::cbor::minicbor_impls), minicbor's `Encode` and `Decode` through a
//! type's [`Field`](crate::cbor::Field) implementation.
//!
//! They are declarative (`macro_rules!`, no proc-macro crate to build) and expand to the code a
//! handler would write by hand: one [`map_entries`](crate::cbor::map_entries) visit with a `match` on
//! the keys to decode, one `Encoder` call per key to encode. Every function they generate is
//! `#[inline]` (a text enum's encoding, one `Encoder::str` call, `#[inline(always)]`), as are the
//! generic helpers of [`cbor`](crate::cbor) they call: the compiler then inlines a payload's code into
//! the handler whichever codegen unit it lands in, and a module built with the macros has no more
//! functions than with hand-written code (see `device-modules/README.md` for the counts).

/// Implements CBOR encoding and decoding for a struct as a map with text keys.
///
/// The struct stays ordinary Rust (its docs, derives, field names and types); the macro names the key
/// of each field. Keys are encoded in the order given. Decoding accepts the keys in any order, skips
/// keys it does not know (so a payload can gain keys without breaking older handlers), accepts
/// definite and indefinite maps, and reads each value through its type's
/// [`Field`](crate::cbor::Field) implementation (an `f32` accepts every CBOR number encoding, an
/// integer every width whose value fits). The struct gets [`Field`](crate::cbor::Field) (so maps
/// nest) and minicbor's `Encode` and `Decode` (so [`to_slice`](crate::cbor::to_slice),
/// [`from_slice`](crate::cbor::from_slice) and [`config_or_default`](crate::cbor::config_or_default)
/// take it).
///
/// A map is one of two kinds:
///
/// - **Records** (messages, commands, events): `"key" => field` is required: a map without the key
///   fails with the error `missing key`. `"key" => field?` is optional, for a field of type
///   `Option<T>`: absent decodes as `None`, and `None` is not encoded.
/// - **Maps with defaults** (class configs, device states): `"key" => field = default` for every key.
///   The macro implements `Default` from those values, a missing key keeps its default, and decoding
///   in place ([`Field::decode_field_in_place`](crate::cbor::Field::decode_field_in_place)) reuses the
///   fields' storage (a nested map or [`Window`](crate::window::Window) included).
///
/// After the keys, `check path` names a `fn(&Self) -> Result<(), &'static str>` that a decoded value
/// must pass (ranges, rules between keys); its error becomes the decoding error. A struct with a
/// lifetime (fields borrowing text from the payload) is written `Name<'a>`.
///
/// ```
/// use edgefleet_guest::cbor;
///
/// /// A reading from the sensor.
/// #[derive(Debug, PartialEq)]
/// pub struct Reading<'a> {
///     pub kpa: f32,
///     pub sensor: &'a str,
///     pub battery_pct: Option<u8>,
/// }
///
/// cbor::map! {
///     Reading<'a> {
///         "kpa" => kpa,
///         "sensor" => sensor,
///         "battery_pct" => battery_pct?,
///     }
/// }
///
/// /// The class config.
/// #[derive(Debug, PartialEq)]
/// pub struct Config {
///     pub alarm_kpa: f32,
///     pub repeat: u32,
/// }
///
/// cbor::map! {
///     Config {
///         "alarm_kpa" => alarm_kpa = 250.0,
///         "repeat" => repeat = 3,
///     }
///     check Config::check
/// }
///
/// impl Config {
///     fn check(&self) -> Result<(), &'static str> {
///         if self.alarm_kpa > 0.0 { Ok(()) } else { Err("alarm_kpa must be positive") }
///     }
/// }
///
/// // {"kpa": 251 (an integer), "sensor": "p1", "fw": "1.2" (unknown, skipped)}
/// let message = b"\xa3\x63kpa\x18\xfb\x66sensor\x62p1\x62fw\x631.2";
/// let reading: Reading = cbor::from_slice(message).unwrap();
/// assert_eq!(reading, Reading { kpa: 251.0, sensor: "p1", battery_pct: None });
/// let mut buf = [0u8; 64];
/// let encoded = cbor::to_slice(&reading, &mut buf).unwrap();
/// assert_eq!(cbor::from_slice::<Reading>(encoded).unwrap(), reading);
///
/// // {"sensor": "p1"}
/// let error = cbor::from_slice::<Reading>(b"\xa1\x66sensor\x62p1").unwrap_err();
/// assert!(error.to_string().contains("missing kpa"), "{error}");
///
/// // {"repeat": 5}; an empty config is all defaults.
/// let config: Config = cbor::config_or_default(b"\xa1\x66repeat\x05").unwrap();
/// assert_eq!(config, Config { alarm_kpa: 250.0, repeat: 5 });
/// assert_eq!(cbor::config_or_default::<Config>(&[]).unwrap(), Config::default());
/// // {"alarm_kpa": -1}
/// assert!(cbor::config_or_default::<Config>(b"\xa1\x69alarm_kpa\x20").is_err());
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! __cbor_map {
    // A map with defaults: every key has one.
    (
        $name:ident $(<$lt:lifetime>)? {
            $($key:literal => $field:ident = $default:expr),+ $(,)?
        }
        $(check $check:path)?
    ) => {
        impl $(<$lt>)? ::core::default::Default for $name $(<$lt>)? {
            #[inline]
            fn default() -> Self {
                $name { $($field: $default),+ }
            }
        }

        impl<'__b $(: $lt)?, $($lt)?> $crate::cbor::Field<'__b> for $name $(<$lt>)? {
            #[inline]
            fn decode_field(
                d: &mut $crate::minicbor::Decoder<'__b>,
            ) -> ::core::result::Result<Self, $crate::minicbor::decode::Error> {
                let mut value = <Self as ::core::default::Default>::default();
                $crate::cbor::Field::decode_field_in_place(&mut value, d)?;
                ::core::result::Result::Ok(value)
            }

            #[inline]
            fn decode_field_in_place(
                &mut self,
                d: &mut $crate::minicbor::Decoder<'__b>,
            ) -> ::core::result::Result<(), $crate::minicbor::decode::Error> {
                let _at = d.position();
                let $name { $($field),+ } = self;
                $crate::cbor::map_entries(d, |key, d| {
                    match key {
                        $($key => $crate::cbor::Field::decode_field_in_place(&mut *$field, d)?,)+
                        _ => return ::core::result::Result::Ok(false),
                    }
                    ::core::result::Result::Ok(true)
                })?;
                $($check(self).map_err(|m| $crate::minicbor::decode::Error::message(m).at(_at))?;)?
                ::core::result::Result::Ok(())
            }

            #[inline]
            fn encode_field<W: $crate::minicbor::encode::Write>(
                &self,
                e: &mut $crate::minicbor::Encoder<W>,
            ) -> ::core::result::Result<(), $crate::minicbor::encode::Error<W::Error>> {
                let $name { $($field),+ } = self;
                e.map(<[&str]>::len(&[$($key),+]) as u64)?;
                $(
                    e.str($key)?;
                    $crate::cbor::Field::encode_field($field, e)?;
                )+
                ::core::result::Result::Ok(())
            }
        }

        $crate::__cbor_minicbor_impls!($name $(<$lt>)?);
    };

    // A record: required and optional keys, collected one by one into `(kind key field)`.
    (
        $name:ident $(<$lt:lifetime>)? { $($fields:tt)+ }
        $(check $check:path)?
    ) => {
        $crate::__cbor_map!(@record $name [$($lt)?] [$($check)?] [] $($fields)+);
    };
    (@record $name:ident $lt:tt $check:tt [$($done:tt)*]
        $key:literal => $field:ident ? $(, $($rest:tt)*)?
    ) => {
        $crate::__cbor_map!(
            @record $name $lt $check [$($done)* (optional $key $field)] $($($rest)*)?
        );
    };
    (@record $name:ident $lt:tt $check:tt [$($done:tt)*]
        $key:literal => $field:ident $(, $($rest:tt)*)?
    ) => {
        $crate::__cbor_map!(
            @record $name $lt $check [$($done)* (required $key $field)] $($($rest)*)?
        );
    };
    (@record $name:ident $lt:tt $check:tt [$($done:tt)*]
        $key:literal => $field:ident = $($rest:tt)*
    ) => {
        ::core::compile_error!(::core::concat!(
            "cbor::map!: \"", $key, "\" has a default and an earlier key has none: ",
            "either every key of a map has a default or none has"
        ));
    };
    (@record $name:ident [$($lt:lifetime)?] [$($check:path)?]
        [$(($kind:ident $key:literal $field:ident))+]
    ) => {
        impl<'__b $(: $lt)?, $($lt)?> $crate::cbor::Field<'__b> for $name $(<$lt>)? {
            #[inline]
            fn decode_field(
                d: &mut $crate::minicbor::Decoder<'__b>,
            ) -> ::core::result::Result<Self, $crate::minicbor::decode::Error> {
                let _at = d.position();
                $(let mut $field = ::core::option::Option::None;)+
                $crate::cbor::map_entries(d, |key, d| {
                    match key {
                        $($key => {
                            $field = ::core::option::Option::Some(
                                $crate::cbor::Field::decode_field(d)?,
                            )
                        })+
                        _ => return ::core::result::Result::Ok(false),
                    }
                    ::core::result::Result::Ok(true)
                })?;
                let value = $name {
                    $($field: $crate::__cbor_map!(@take $kind $field $key _at),)+
                };
                $($check(&value).map_err(|m| $crate::minicbor::decode::Error::message(m).at(_at))?;)?
                ::core::result::Result::Ok(value)
            }

            #[inline]
            fn encode_field<W: $crate::minicbor::encode::Write>(
                &self,
                e: &mut $crate::minicbor::Encoder<W>,
            ) -> ::core::result::Result<(), $crate::minicbor::encode::Error<W::Error>> {
                let $name { $($field),+ } = self;
                e.map(0 $(+ $crate::__cbor_map!(@count $kind $field))+)?;
                $($crate::__cbor_map!(@encode $kind e $key $field);)+
                ::core::result::Result::Ok(())
            }
        }

        $crate::__cbor_minicbor_impls!($name $(<$lt>)?);
    };
    (@take required $field:ident $key:literal $at:ident) => {
        $field.ok_or_else(|| $crate::cbor::missing(::core::concat!("missing ", $key), $at))?
    };
    (@take optional $field:ident $key:literal $at:ident) => {
        $field
    };
    (@count required $field:ident) => {
        1
    };
    (@count optional $field:ident) => {
        u64::from($field.is_some())
    };
    (@encode required $e:ident $key:literal $field:ident) => {
        $e.str($key)?;
        $crate::cbor::Field::encode_field($field, $e)?;
    };
    (@encode optional $e:ident $key:literal $field:ident) => {
        if let ::core::option::Option::Some($field) = $field {
            $e.str($key)?;
            $crate::cbor::Field::encode_field($field, $e)?;
        }
    };
}

/// Encodes a fieldless `Copy` enum as text: implements `as_str` (the variant's text), `parse` (the
/// variant of a text), [`Field`](crate::cbor::Field) and minicbor's `Encode` and `Decode`. Decoding
/// any other text fails, naming the enum and the texts it knows.
///
/// ```
/// use edgefleet_guest::cbor;
///
/// #[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// pub enum Vent { On, Off }
///
/// cbor::text_enum! {
///     Vent { On => "on", Off => "off" }
/// }
///
/// assert_eq!(Vent::On.as_str(), "on");
/// assert_eq!(Vent::parse("off"), Some(Vent::Off));
/// assert_eq!(cbor::from_slice::<Vent>(b"\x62on").unwrap(), Vent::On);
/// let error = cbor::from_slice::<Vent>(b"\x64auto").unwrap_err();
/// assert!(error.to_string().contains(r#"unknown Vent, expected one of "on" "off""#), "{error}");
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! __cbor_text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// The text this value is encoded as.
            #[inline]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value encoded as `text`, if there is one.
            #[inline]
            pub fn parse(text: &str) -> ::core::option::Option<Self> {
                match text {
                    $($text => ::core::option::Option::Some($name::$variant),)+
                    _ => ::core::option::Option::None,
                }
            }
        }

        impl<'__b> $crate::cbor::Field<'__b> for $name {
            #[inline]
            fn decode_field(
                d: &mut $crate::minicbor::Decoder<'__b>,
            ) -> ::core::result::Result<Self, $crate::minicbor::decode::Error> {
                let at = d.position();
                $name::parse(d.str()?).ok_or_else(|| {
                    $crate::minicbor::decode::Error::message(::core::concat!(
                        "unknown ", ::core::stringify!($name), ", expected one of"
                        $(, " \"", $text, "\"")+
                    ))
                    .at(at)
                })
            }

            #[inline(always)]
            fn encode_field<W: $crate::minicbor::encode::Write>(
                &self,
                e: &mut $crate::minicbor::Encoder<W>,
            ) -> ::core::result::Result<(), $crate::minicbor::encode::Error<W::Error>> {
                e.str(self.as_str())?;
                ::core::result::Result::Ok(())
            }
        }

        $crate::__cbor_minicbor_impls!($name);
    };
}

/// Implements minicbor's `Encode` and `Decode` (any context) for a type through its
/// [`Field`](crate::cbor::Field) implementation, for a value type written by hand. [`map!`] and
/// [`text_enum!`] do this themselves.
///
/// ```
/// use edgefleet_guest::cbor::{self, Field};
/// use edgefleet_guest::minicbor::{decode, encode, Decoder, Encoder};
///
/// /// A percentage, kept as an integer 0..=100.
/// #[derive(Debug, PartialEq)]
/// pub struct Percent(u8);
///
/// impl<'b> Field<'b> for Percent {
///     fn decode_field(d: &mut Decoder<'b>) -> Result<Self, decode::Error> {
///         let at = d.position();
///         match d.u8()? {
///             n @ 0..=100 => Ok(Percent(n)),
///             _ => Err(decode::Error::message("a percentage is 0..=100").at(at)),
///         }
///     }
///
///     fn encode_field<W: encode::Write>(
///         &self,
///         e: &mut Encoder<W>,
///     ) -> Result<(), encode::Error<W::Error>> {
///         e.u8(self.0)?;
///         Ok(())
///     }
/// }
///
/// cbor::minicbor_impls!(Percent);
///
/// assert_eq!(cbor::from_slice::<Percent>(&[0x18, 50]).unwrap(), Percent(50));
/// assert!(cbor::from_slice::<Percent>(&[0x18, 101]).is_err());
/// ```
///
/// [`map!`]: crate::cbor::map
/// [`text_enum!`]: crate::cbor::text_enum
#[doc(hidden)]
#[macro_export]
macro_rules! __cbor_minicbor_impls {
    ($name:ident $(<$lt:lifetime>)?) => {
        impl<$($lt,)? C> $crate::minicbor::Encode<C> for $name $(<$lt>)? {
            #[inline]
            fn encode<W: $crate::minicbor::encode::Write>(
                &self,
                e: &mut $crate::minicbor::Encoder<W>,
                _: &mut C,
            ) -> ::core::result::Result<(), $crate::minicbor::encode::Error<W::Error>> {
                $crate::cbor::Field::encode_field(self, e)
            }
        }

        impl<'__b $(: $lt)?, $($lt,)? C> $crate::minicbor::Decode<'__b, C> for $name $(<$lt>)? {
            #[inline]
            fn decode(
                d: &mut $crate::minicbor::Decoder<'__b>,
                _: &mut C,
            ) -> ::core::result::Result<Self, $crate::minicbor::decode::Error> {
                <Self as $crate::cbor::Field<'__b>>::decode_field(d)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;
    use std::vec::Vec;

    use crate::cbor::{self, Field};
    use crate::minicbor::{Decode, Decoder, Encode};
    use crate::window::Window;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Colour {
        Red,
        Green,
    }

    crate::cbor::text_enum! {
        Colour { Red => "red", Green => "green" }
    }

    #[derive(Debug, PartialEq)]
    struct Event<'a> {
        name: &'a str,
        colour: Colour,
        level: Option<f32>,
        count: Option<u16>,
    }

    crate::cbor::map! {
        Event<'a> {
            "name" => name,
            "colour" => colour,
            "level" => level?,
            "n" => count?,
        }
    }

    #[derive(Debug, PartialEq)]
    struct Inner {
        samples: Window<4>,
        flag: bool,
    }

    crate::cbor::map! {
        Inner {
            "samples" => samples = Window::new(),
            "flag" => flag = true,
        }
    }

    #[derive(Debug, PartialEq)]
    struct Outer {
        low: u8,
        high: u8,
        inner: Inner,
    }

    crate::cbor::map! {
        Outer {
            "low" => low = 1,
            "high" => high = 9,
            "inner" => inner = Inner::default(),
        }
        check Outer::check
    }

    impl Outer {
        fn check(&self) -> Result<(), &'static str> {
            if self.low <= self.high {
                Ok(())
            } else {
                Err("low above high")
            }
        }
    }

    fn encoded<T: Encode<()>>(value: &T) -> Vec<u8> {
        let mut buf = [0u8; 128];
        cbor::to_slice(value, &mut buf).unwrap().to_vec()
    }

    fn error<'b, T: Decode<'b, ()> + core::fmt::Debug>(bytes: &'b [u8]) -> std::string::String {
        cbor::from_slice::<T>(bytes).unwrap_err().to_string()
    }

    #[test]
    fn a_record_encodes_its_keys_in_order_and_leaves_out_absent_options() {
        let event = Event {
            name: "x",
            colour: Colour::Green,
            level: None,
            count: Some(7),
        };
        assert_eq!(
            encoded(&event),
            b"\xa3\x64name\x61x\x66colour\x65green\x61n\x07".to_vec()
        );
        assert_eq!(cbor::from_slice::<Event>(&encoded(&event)).unwrap(), event);
    }

    #[test]
    fn a_record_decodes_any_key_order_number_width_and_unknown_keys() {
        // {_ "level": 2 (an integer), "extra": [1, {}], "colour": "red", "name": "a"}
        let bytes = b"\xbf\x65level\x02\x65extra\x82\x01\xa0\x66colour\x63red\x64name\x61a\xff";
        assert_eq!(
            cbor::from_slice::<Event>(bytes).unwrap(),
            Event {
                name: "a",
                colour: Colour::Red,
                level: Some(2.0),
                count: None
            }
        );
    }

    #[test]
    fn a_missing_required_key_is_named_in_the_error() {
        // {"name": "a"}
        let message = error::<Event>(b"\xa1\x64name\x61a");
        assert!(message.contains("missing colour"), "{message}");
        // {"colour": "red"}
        let message = error::<Event>(b"\xa1\x66colour\x63red");
        assert!(message.contains("missing name"), "{message}");
        // {"name": "a", "colour": "blue"}
        let message = error::<Event>(b"\xa2\x64name\x61a\x66colour\x64blue");
        assert!(
            message.contains(r#"unknown Colour, expected one of "red" "green""#),
            "{message}"
        );
        // {"name": 1, ...}: a known key with a value of the wrong type.
        assert!(cbor::from_slice::<Event>(b"\xa2\x64name\x01\x66colour\x63red").is_err());
        assert!(cbor::from_slice::<Event>(b"\x80").is_err(), "not a map");
    }

    #[test]
    fn a_map_with_defaults_keeps_the_defaults_of_missing_keys() {
        assert_eq!(
            Outer::default(),
            Outer {
                low: 1,
                high: 9,
                inner: Inner {
                    samples: Window::new(),
                    flag: true
                }
            }
        );
        // {"inner": {"samples": [1.5]}, "high": 4}
        let bytes = b"\xa2\x65inner\xa1\x67samples\x81\xf9\x3e\x00\x64high\x04";
        let outer: Outer = cbor::from_slice(bytes).unwrap();
        assert_eq!((outer.low, outer.high, outer.inner.flag), (1, 4, true));
        assert_eq!(outer.inner.samples.samples(), &[1.5]);
        assert_eq!(cbor::from_slice::<Outer>(&encoded(&outer)).unwrap(), outer);
        assert_eq!(
            cbor::config_or_default::<Outer>(&[]).unwrap(),
            Outer::default()
        );
    }

    #[test]
    fn decoding_in_place_replaces_the_keys_present_only() {
        let mut outer = Outer::default();
        outer.inner.samples.push(9.0, 4);
        outer.low = 3;
        // {"inner": {"flag": false}}
        let bytes = b"\xa1\x65inner\xa1\x64flag\xf4";
        outer
            .decode_field_in_place(&mut Decoder::new(bytes))
            .unwrap();
        assert_eq!(outer.low, 3);
        assert!(!outer.inner.flag);
        assert_eq!(
            outer.inner.samples.samples(),
            &[9.0],
            "kept: no samples key"
        );
    }

    #[test]
    fn the_check_refuses_a_decoded_value() {
        // {"low": 5, "high": 4}
        let message = error::<Outer>(b"\xa2\x63low\x05\x64high\x04");
        assert!(message.contains("low above high"), "{message}");
        // {"low": 300}: a value the field's type cannot hold.
        assert!(cbor::from_slice::<Outer>(b"\xa1\x63low\x19\x01\x2c").is_err());
    }

    #[test]
    fn text_enums_name_their_variants() {
        assert_eq!(Colour::Green.as_str(), "green");
        assert_eq!(Colour::parse("red"), Some(Colour::Red));
        assert_eq!(Colour::parse("Red"), None);
        assert_eq!(encoded(&Colour::Red), b"\x63red".to_vec());
    }
}

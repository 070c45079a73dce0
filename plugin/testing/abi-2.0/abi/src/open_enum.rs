//! `open_enum!`: a field-less enum that a minor ABI version can extend.
//!
//! A `#[repr(u8)]` Rust enum is exhaustive at the boundary: a value the receiver was not compiled with is
//! undefined behaviour, so abi_stable refuses any added variant. These types are `#[repr(transparent)]`
//! newtypes over `u8` instead, with one associated constant per value (the pattern abi_stable's
//! `library_evolution` document recommends). Known values keep their names (`ErrorKind::NotFound`), compare
//! with `==` and work as `match` patterns; a value from a newer peer is carried as it is, reads as
//! `"unknown"` and is treated safely by whoever receives it (see the crate docs).

macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(abi_stable::StableAbi, Copy, Clone, PartialEq, Eq, Hash)]
        pub struct $name(u8);

        #[allow(non_upper_case_globals)]
        impl $name {
            $( $(#[$vmeta])* pub const $variant: $name = $name($value); )+

            /// Every value this build knows, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The value with this wire number, known to this build or not.
            pub const fn from_raw(raw: u8) -> Self {
                $name(raw)
            }

            /// The wire number.
            pub const fn raw(self) -> u8 {
                self.0
            }

            /// Whether this build knows the value (a newer peer may send one it does not).
            pub fn is_known(self) -> bool {
                Self::ALL.contains(&self)
            }

            /// The value's name in messages, config and storage; `"unknown"` for a value this build does not know.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                    _ => "unknown",
                }
            }

            /// The known value named `s` (as [`Self::as_str`] spells it).
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.as_str() == s)
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match *self {
                    $( $name::$variant => f.write_str(stringify!($variant)), )+
                    _ => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl core::fmt::Display for $name {
            /// The name, or `unknown (N)` with the wire number for a value this build does not know.
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                if self.is_known() {
                    f.write_str(self.as_str())
                } else {
                    write!(f, "unknown ({})", self.0)
                }
            }
        }
    };
}

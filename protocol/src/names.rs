//! Fieldless enums whose values travel as strings, each name written once (`wire_enum!`),
//! and the serde code they share.
//!
//! The serde impls mirror `#[derive(Serialize, Deserialize)]` on a unit-only enum exactly:
//! a unit variant out, `deserialize_enum` in (so `"ok"`, and serde's `{"ok": null}` form
//! too), "unknown variant `x`, expected one of …" for a wrong name. But the reading is done
//! once for every such enum, by the non-generic visitors below that answer an index into the
//! enum's `NAMES`, instead of two visitors per enum: this code runs in the browser's wasm.

use serde::de::{self, DeserializeSeed, EnumAccess, Unexpected, VariantAccess, Visitor};
use serde::Deserializer;
use std::fmt;

/// Declares a fieldless enum that travels as a string, listing each variant once with its
/// wire name:
///
/// ```text
/// wire_enum! {
///     /// Optional attributes and docs go to the enum (here: an extra derive).
///     #[derive(Default)]
///     pub enum HostType {
///         #[default]
///         Nixos = "nixos",
///         Macos = "macos",
///     }
/// }
/// ```
///
/// Generates the enum (always `Clone, Copy, Debug, PartialEq, Eq, Hash`), `ALL` (every
/// variant, in declaration order), `NAMES` (their wire names, in the same order),
/// `as_str`, `parse`, `Display` (the wire name), and serde `Serialize`/`Deserialize` with
/// those names.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        // A private enum (a frame's tag) need not use all of it.
        #[allow(dead_code)]
        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [Self; [$($wire),+].len()] = [$(Self::$variant),+];
            /// The wire names, in the order of `ALL`.
            pub const NAMES: [&'static str; [$($wire),+].len()] = [$($wire),+];

            /// The name on the wire.
            pub const fn as_str(self) -> &'static str {
                // `ALL` and `NAMES` are in declaration order, so the discriminant is the index.
                Self::NAMES[self as usize]
            }

            /// The variant of a wire name; None for any other text.
            pub fn parse(s: &str) -> Option<Self> {
                $crate::names::position(&Self::NAMES, s).map(|i| Self::ALL[i])
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_unit_variant(stringify!($name), *self as u32, self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::names::deserialize(d, stringify!($name), &Self::NAMES).map(|i| Self::ALL[i])
            }
        }

        // The schema says what `Serialize` above writes: one of `NAMES`, as a string.
        #[cfg(feature = "openapi")]
        impl ::utoipa::PartialSchema for $name {
            fn schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                $crate::names::string_enum_schema(&Self::NAMES)
            }
        }

        #[cfg(feature = "openapi")]
        impl ::utoipa::ToSchema for $name {}
    };
}

pub(crate) use wire_enum;

/// A `wire_enum!`'s OpenAPI schema: a string that is one of `names`.
#[cfg(feature = "openapi")]
pub(crate) fn string_enum_schema(
    names: &[&str],
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names.iter().copied()))
        .into()
}

/// Where `s` is in `names`.
pub(crate) fn position(names: &[&str], s: &str) -> Option<usize> {
    names.iter().position(|n| *n == s)
}

/// Reads a unit variant of the enum `name` whose variants are `names`, as the derive does;
/// answers its index in `names`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    d: D,
    name: &'static str,
    names: &'static [&'static str],
) -> Result<usize, D::Error> {
    d.deserialize_enum(name, names, EnumVisitor { name, names })
}

/// The derive's `__Visitor`: a variant, which must be a unit variant.
struct EnumVisitor {
    name: &'static str,
    names: &'static [&'static str],
}

impl<'de> Visitor<'de> for EnumVisitor {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("enum ")?;
        f.write_str(self.name)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<usize, A::Error> {
        let (index, variant) = data.variant_seed(VariantName(self.names))?;
        variant.unit_variant()?;
        Ok(index)
    }
}

/// The derive's `__FieldVisitor`: a variant's name (or its index).
struct VariantName(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for VariantName {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for VariantName {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("variant identifier")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
        match usize::try_from(v) {
            Ok(i) if i < self.0.len() => Ok(i),
            _ => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        position(self.0, v).ok_or_else(|| E::unknown_variant(v, self.0))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<usize, E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_str(s),
            Err(_) => Err(E::invalid_value(Unexpected::Bytes(v), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::api::{OnFailure, Role};
    use crate::messages::{AgentOutcome, DeployHostState, DeployPhase};
    use crate::model::{
        ChangeKind, CheckStatus, CommandKind, CommandStatus, HostType, OutputStream,
    };
    use std::collections::HashSet;

    /// For each enum: every variant's name parses back to it, serde writes and reads that
    /// name (and `Display` shows it), the names are distinct, and anything else is refused.
    macro_rules! check_wire_enums {
        ($($ty:ty),+ $(,)?) => {$({
            let all = <$ty>::ALL;
            assert_eq!(all.len(), <$ty>::NAMES.len());
            let mut seen = HashSet::new();
            for (i, x) in all.into_iter().enumerate() {
                let name = x.as_str();
                assert_eq!(name, <$ty>::NAMES[i]);
                assert!(seen.insert(name), "{} twice in {}", name, stringify!($ty));
                assert_eq!(<$ty>::parse(name), Some(x));
                assert_eq!(x.to_string(), name);
                let json = serde_json::to_string(&x).unwrap();
                assert_eq!(json, format!("\"{name}\""));
                assert_eq!(serde_json::from_str::<$ty>(&json).unwrap(), x);
                assert_eq!(serde_json::to_value(x).unwrap(), name);
                assert_eq!(serde_json::from_value::<$ty>(name.into()).unwrap(), x);
                // serde's externally tagged form of a unit variant, as the derive read it.
                let tagged = format!("{{\"{name}\":null}}");
                assert_eq!(serde_json::from_str::<$ty>(&tagged).unwrap(), x);
                assert_eq!(<$ty>::parse(&name.to_uppercase()), None);
            }
            assert_eq!(<$ty>::parse(""), None);
            assert_eq!(<$ty>::parse("nope"), None);
            let err = serde_json::from_str::<$ty>("\"nope\"").unwrap_err().to_string();
            assert!(err.starts_with("unknown variant `nope`, expected "), "{err}");
            assert!(err.contains(&format!("`{}`", all[0])), "{err}");
            assert!(serde_json::from_str::<$ty>("1").is_err());
            assert!(serde_json::from_str::<$ty>("null").is_err());
            let tagged = format!("{{\"{}\":1}}", all[0]);
            assert!(serde_json::from_str::<$ty>(&tagged).is_err());
        })+};
    }

    #[test]
    fn names_round_trip() {
        check_wire_enums!(
            HostType,
            CheckStatus,
            CommandKind,
            CommandStatus,
            OutputStream,
            AgentOutcome,
            DeployPhase,
            DeployHostState,
            Role,
            ChangeKind,
            OnFailure,
        );
    }

    #[test]
    fn wire_names_are_the_contract() {
        assert_eq!(HostType::NAMES, ["nixos", "macos"]);
        assert_eq!(
            CheckStatus::NAMES,
            ["ok", "outdated", "error", "unknown", "working"]
        );
        assert_eq!(
            CommandKind::NAMES,
            [
                "pull",
                "switch",
                "pull-switch",
                "test",
                "update",
                "rollback",
                "refresh",
                "restart",
                "preview",
                "boot"
            ]
        );
        assert_eq!(
            CommandStatus::NAMES,
            [
                "queued",
                "running",
                "ok",
                "error",
                "stopped",
                "timeout",
                "lost",
                "abandoned",
                "rolled_back"
            ]
        );
        assert_eq!(OutputStream::NAMES, ["stdout", "stderr"]);
        assert_eq!(
            AgentOutcome::NAMES,
            ["ok", "error", "stopped", "rolled_back"]
        );
        assert_eq!(
            DeployPhase::NAMES,
            [
                "previewing",
                "awaiting_confirmation",
                "merging",
                "pulling",
                "switching",
                "done",
                "failed"
            ]
        );
        assert_eq!(
            DeployHostState::NAMES,
            [
                "pending",
                "running",
                "ok",
                "error",
                "skipped",
                "rolled_back"
            ]
        );
        assert_eq!(
            ChangeKind::NAMES,
            ["added", "removed", "upgraded", "downgraded", "changed"]
        );
        assert_eq!(OnFailure::NAMES, ["halt", "rollback-and-halt"]);
        assert_eq!(Role::NAMES, ["viewer", "operator", "admin"]);
        assert_eq!(HostType::default(), HostType::Nixos);
        assert_eq!(CheckStatus::default(), CheckStatus::Unknown);
    }

    #[test]
    fn unknown_names_are_listed_like_the_derive() {
        let err = serde_json::from_str::<HostType>("\"bsd\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown variant `bsd`, expected `nixos` or `macos` at line 1 column 5"
        );
        let err = serde_json::from_value::<Role>("root".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown variant `root`, expected one of `viewer`, `operator`, `admin`"
        );
    }

    #[test]
    fn roles_are_ordered() {
        use Role::*;
        assert!(Viewer < Operator && Operator < Admin);
        assert_eq!(Role::ALL, [Viewer, Operator, Admin]);
        assert!(Admin.at_least(Operator) && Admin.at_least(Admin) && Admin.at_least(Viewer));
        assert!(Operator.at_least(Operator) && Operator.at_least(Viewer));
        assert!(!Operator.at_least(Admin));
        assert!(Viewer.at_least(Viewer));
        assert!(!Viewer.at_least(Operator) && !Viewer.at_least(Admin));
        assert_eq!(Role::ALL.into_iter().max(), Some(Admin));
    }
}

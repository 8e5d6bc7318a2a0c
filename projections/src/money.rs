//! Currencies and rounding. Each invoice line's exact amount is rounded once
//! to the currency's minor units, half away from zero.

use rust_decimal::{Decimal, RoundingStrategy};

/// ISO 4217 minor units for the currencies the ledger accepts.
pub fn minor_units(currency: &str) -> Option<u32> {
    Some(match currency {
        "USD" | "EUR" | "GBP" | "CHF" | "CAD" | "AUD" | "NZD" | "SEK" | "NOK" | "DKK" | "PLN" | "CZK"
        | "CNY" | "INR" | "BRL" | "MXN" | "SGD" | "HKD" | "ZAR" => 2,
        "JPY" | "KRW" | "ISK" | "CLP" | "VND" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" => 3,
        _ => return None,
    })
}

/// Rounds to the currency's minor units (half away from zero) and fixes the
/// scale, so 40 prints as "40.00".
pub fn round(amount: Decimal, currency: &str) -> Decimal {
    let units = minor_units(currency).expect("currencies are checked when plans are defined");
    let mut rounded = amount.round_dp_with_strategy(units, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(units);
    rounded
}

/// A zero at the currency's scale.
pub fn zero(currency: &str) -> Decimal {
    round(Decimal::ZERO, currency)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn rounding_is_half_away_from_zero_at_the_currency_scale() {
        assert_eq!(round(d("2.005"), "USD").to_string(), "2.01");
        assert_eq!(round(d("2.0049999"), "USD").to_string(), "2.00");
        assert_eq!(round(d("2.032258064516"), "USD").to_string(), "2.03");
        assert_eq!(round(d("40"), "EUR").to_string(), "40.00");
        assert_eq!(round(d("12.5"), "JPY").to_string(), "13");
        assert_eq!(round(d("-0.005"), "USD").to_string(), "-0.01");
        assert_eq!(round(d("1.0005"), "KWD").to_string(), "1.001");
        assert_eq!(minor_units("XXX"), None);
    }
}

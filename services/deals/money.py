"""Money as the API speaks it: a canonical decimal string with two places and an ISO 4217 code.

Never float arithmetic: every amount is a :class:`~decimal.Decimal`. A JSON number reaches us as a
Python ``float``; it is converted through its shortest ``repr`` (``1999.99`` stays ``1999.99``),
never through its binary value.

Rules (the API's 422s name the field that broke them):

* ``amount``: non-negative, finite, at most two decimal places, below 10^15; a string may use
  ``,`` as the decimal separator (``"1999,99"``), written without thousands separators.
  Canonical form: ``"1999.99"``, ``"100.00"``, ``"0.00"``.
* ``currency``: three upper-case letters from the active ISO 4217 list below (lower case input is
  upper-cased).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal(10) ** 15

# Active ISO 4217 codes (funds and precious-metal codes left out on purpose).
ISO_4217: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
    MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
    SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
    UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """.split()
)


class MoneyError(ValueError):
    """A value that is not an acceptable amount or currency; ``str(err)`` is the client message."""


def parse_amount(value: object) -> Decimal:
    """``value`` (``str``, ``int``, ``float`` or ``Decimal``) as a Decimal quantized to cents.

    Raises :class:`MoneyError` for anything else, negatives, NaN/Infinity, more than two decimal
    places or absurdly large values.
    """
    if isinstance(value, bool):
        raise MoneyError('must be a decimal number, e.g. "1999.99"')
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = _decimal_from_text(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if "," in text and "." not in text and text.count(",") == 1:
            text = text.replace(",", ".")
        number = _decimal_from_text(text)
    else:
        raise MoneyError('must be a decimal number, e.g. "1999.99"')
    if not number.is_finite():
        raise MoneyError("must be a finite number")
    if number < 0:
        raise MoneyError("must not be negative")
    if number >= MAX_AMOUNT:
        raise MoneyError("is too large")
    if number != number.quantize(CENT, rounding=ROUND_HALF_UP):
        raise MoneyError("may have at most 2 decimal places")
    return number.quantize(CENT)


def _decimal_from_text(text: str) -> Decimal:
    if not text or any(c.isspace() for c in text) or "_" in text:
        raise MoneyError('must be a decimal number, e.g. "1999.99"')
    try:
        return Decimal(text)
    except InvalidOperation:
        raise MoneyError('must be a decimal number, e.g. "1999.99"') from None


def format_amount(value: Decimal) -> str:
    """The canonical string: plain notation, two decimals (``Decimal("1E+3")`` → ``"1000.00"``)."""
    return f"{value.quantize(CENT, rounding=ROUND_HALF_UP):f}"


def canonical_amount(value: object) -> str:
    """Parse then format: ``1999.99`` → ``"1999.99"``, ``100`` → ``"100.00"``."""
    return format_amount(parse_amount(value))


def normalize_currency(value: object) -> str:
    """An ISO 4217 code, upper case. Raises :class:`MoneyError` otherwise."""
    if not isinstance(value, str):
        raise MoneyError('must be an ISO 4217 code such as "RUB"')
    code = value.strip().upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise MoneyError('must be an ISO 4217 code such as "RUB"')
    if code not in ISO_4217:
        raise MoneyError(f"{code} is not an active ISO 4217 currency code")
    return code


def weighted_amount(amount: str | Decimal | None, probability: int) -> str | None:
    """Forecast ``amount * probability / 100``, rounded half-up to cents; None without amount."""
    if amount is None:
        return None
    value = amount if isinstance(amount, Decimal) else Decimal(amount)
    return format_amount(value * Decimal(probability) / Decimal(100))

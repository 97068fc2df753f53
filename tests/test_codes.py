"""Shop codes and USCCs are checked before any query: what a person types wrong is caught."""

from __future__ import annotations

import random

import pytest

from merchant_code.codes import (
    CODE_LENGTH,
    CROCKFORD,
    new_shop_code,
    parse_shop_code,
    parse_uscc,
    uscc_check_char,
)
from merchant_code.errors import InvalidInput

# Published on real business licences (checked by hand against GB 32100-2015).
REAL_USCCS = ["91310000MA1FL4B24G", "91110000802100433B", "91440300708461136T"]


def test_a_new_code_has_thirteen_crockford_symbols_and_validates() -> None:
    code = new_shop_code()
    assert len(code) == CODE_LENGTH
    assert set(code) <= set(CROCKFORD)
    assert parse_shop_code(code) == code


def test_new_codes_carry_sixty_random_bits() -> None:
    codes = {new_shop_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert new_shop_code(0) == "000000000000" + "0"
    assert new_shop_code((1 << 60) - 1)[:12] == "Z" * 12


def test_every_single_symbol_typo_is_caught() -> None:
    code = new_shop_code(random.Random(7).getrandbits(60))
    for pos in range(CODE_LENGTH):
        for ch in CROCKFORD:
            if ch != code[pos]:
                typo = code[:pos] + ch + code[pos + 1 :]
                with pytest.raises(InvalidInput, match="check character"):
                    parse_shop_code(typo)


def test_swapping_two_neighbours_is_almost_always_caught() -> None:
    rng = random.Random(11)
    caught = total = 0
    for _ in range(300):
        code = new_shop_code(rng.getrandbits(60))
        for pos in range(CODE_LENGTH - 1):
            if code[pos] == code[pos + 1]:
                continue
            swapped = code[:pos] + code[pos + 1] + code[pos] + code[pos + 2 :]
            total += 1
            try:
                parse_shop_code(swapped)
            except InvalidInput:
                caught += 1
    assert caught / total > 0.98


def test_lower_case_hyphens_and_look_alike_letters_are_read_as_crockford_says() -> None:
    code = new_shop_code(0x0123456789ABCDE)
    typed = f"{code[:4].lower()}-{code[4:8]}-{code[8:]}"
    assert parse_shop_code(typed) == code
    with_o = code.replace("0", "O")
    assert parse_shop_code(with_o) == code


def test_full_width_characters_from_a_chinese_keyboard_are_accepted() -> None:
    code = new_shop_code(123456789)
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in code)
    assert parse_shop_code(full_width) == code


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ABC", "13 characters, this has 3"),
        ("0123456789ABCDE", "this has 15"),
        ("0123456789AB!", "cannot contain '!'"),
        ("0123456789ABU", "cannot contain 'U'"),
    ],
)
def test_a_malformed_code_says_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        parse_shop_code(raw)
    assert caught.value.field == "code"


@pytest.mark.parametrize("uscc", REAL_USCCS)
def test_real_usccs_pass(uscc: str) -> None:
    assert parse_uscc(uscc) == uscc


def test_a_wrong_uscc_check_character_is_refused_with_the_standard_named() -> None:
    good = REAL_USCCS[0]
    wrong = good[:17] + ("0" if good[17] != "0" else "1")
    with pytest.raises(InvalidInput, match="GB 32100-2015"):
        parse_uscc(wrong)


@pytest.mark.parametrize(
    ("raw", "message"), [("91310000MA1FL4B24", "this has 17"), ("91310000MA1FL4B24GX", "this has 19")]
)
def test_a_uscc_of_the_wrong_length_is_refused(raw: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_uscc(raw)


def test_letters_the_uscc_never_uses_are_refused() -> None:
    body = "91310000MA1FL4BI4"  # I is not in the alphabet
    with pytest.raises(InvalidInput, match="cannot contain 'I'"):
        parse_uscc(body + "0")


def test_a_uscc_typed_in_lower_case_or_full_width_is_normalised() -> None:
    good = REAL_USCCS[0]
    assert parse_uscc(good.lower()) == good
    assert parse_uscc("".join(chr(ord(c) + 0xFEE0) for c in good)) == good


def test_the_check_character_matches_the_standard_on_generated_codes() -> None:
    rng = random.Random(3)
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    for _ in range(200):
        body = "92" + "310104" + "".join(rng.choice(alphabet) for _ in range(9))
        assert parse_uscc(body + uscc_check_char(body)).endswith(uscc_check_char(body))

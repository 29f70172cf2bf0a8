from tui.rst_payload import describe


def test_reason_code_sequence() -> None:
    # the draft's example: 12345 then {1: 2}
    assert describe(bytes.fromhex("193039a10102")) == "reason 2: desynchronized state"


def test_array_form_and_description() -> None:
    text = b"idle mapping expired"
    payload = bytes.fromhex("82193039a103") + bytes([0x60 | len(text)]) + text
    assert describe(payload) == "'idle mapping expired'"


def test_vendor_code() -> None:
    # {1: 1234, 2: 32473}
    assert describe(bytes.fromhex("193039a2011904d2021a00007ed9")) == "vendor reason 1234 (enterprise 32473)"


def test_not_a_diagnostic_payload() -> None:
    assert describe(b"F5 reset cause: idle timeout") is None
    assert describe(bytes.fromhex("33aa0001")) is None  # the older binary form
    assert describe(b"") is None
    assert describe(bytes.fromhex("1930")) is None  # cut short

"""SoC glue: Wishbone decoder and SRAM, CSR banks, the generated header, firmware build and a pysim run."""

import re

import pytest
from amaranth import Module
from amaranth.hdl import Fragment
from amaranth.lib import wiring

from insitu.hdl.testing import run
from insitu.soc.bus import SRAM, Decoder, check_window, wishbone_signature
from insitu.soc.csr import Field, Register, RegisterBank, c_header
from insitu.soc.driver import Registers, wb_read, wb_write
from insitu.soc.firmware import FIRMWARE_DIR, CompilerMissing, FirmwareError, build_firmware
from insitu.soc.soc import SoC, memory_map


class _Ctrl(Register):
    """Control."""
    fields = [Field("enable", 1, "rw"), Field("mode", 7, "rw", reset=5), Field("count", 16, "rw")]


class _Cmd(Register):
    """Command strobe."""
    fields = [Field("op", 8, "w")]


class _Stat(Register):
    """Status."""
    fields = [Field("value", 12, "r"), Field("pop", 8, "rc")]


class Fabric(wiring.Component):
    """An initiator port, a decoder, an SRAM at 0x1000 and a register bank at 0x2000."""

    def __init__(self):
        super().__init__({"bus": wiring.In(wishbone_signature())})
        self.sram = SRAM(size=64, init=bytes(range(8)))
        self.regs = [_Ctrl("ctrl"), _Cmd("cmd"), _Stat("stat")]
        self.bank = RegisterBank("dev", self.regs)
        self.decoder = Decoder()
        self.decoder.add("sram", self.sram.bus, base=0x1000, size=64)
        self.decoder.add("dev", self.bank.bus, base=0x2000, size=self.bank.size, idle_zero=True)

    def elaborate(self, platform):
        m = Module()
        m.submodules += [self.sram, self.bank, self.decoder]
        wiring.connect(m, wiring.flipped(self.bus), self.decoder.bus)
        m.d.comb += self.bank.stat.value.eq(0xABC)
        return m


def test_decoder_sram_and_registers():
    dut = Fabric()
    log = {}

    async def bench(ctx):
        bus = dut.bus
        log["init"] = await wb_read(ctx, bus, 0x1000)
        await wb_write(ctx, bus, 0x1004, 0x11223344)
        await wb_write(ctx, bus, 0x1004, 0xAABBCCDD, sel=0b0101)        # bytes 0 and 2 only
        log["bytes"] = await wb_read(ctx, bus, 0x1004)
        log["ctrl_reset"] = await wb_read(ctx, bus, 0x2000)
        await wb_write(ctx, bus, 0x2000, 0x00123481)
        log["ctrl"] = await wb_read(ctx, bus, 0x2000)
        log["enable"] = ctx.get(dut.bank.ctrl.enable)
        await wb_write(ctx, bus, 0x2000, 0xFFFFFF00, sel=0b0010)       # only byte 1: count[7:0]
        log["ctrl_byte"] = await wb_read(ctx, bus, 0x2000)
        log["stat"] = await wb_read(ctx, bus, 0x2008)
        log["unmapped_before"] = ctx.get(dut.decoder.unmapped)
        log["unmapped_read"] = await wb_read(ctx, bus, 0x3004)
        log["unmapped"] = ctx.get(dut.decoder.unmapped)
        log["unmapped_addr"] = ctx.get(dut.decoder.unmapped_addr)

    run(dut, [bench], deadline=400)
    assert log["init"] == 0x03020100
    assert log["bytes"] == 0x11BB33DD
    assert log["ctrl_reset"] == 5 << 1
    assert log["ctrl"] == 0x00123481 & 0xFFFFFF
    assert log["enable"] == 1
    assert log["ctrl_byte"] == (0x00123481 & 0xFF) | (0xFF << 8) | (0x12 << 16)
    assert log["stat"] == 0xABC
    assert (log["unmapped_before"], log["unmapped_read"], log["unmapped"], log["unmapped_addr"]) == (0, 0, 1, 0x3004)


def test_register_strobes():
    dut = Fabric()
    seen = []

    async def bench(ctx):
        await wb_write(ctx, dut.bus, 0x2004, 0x5A)
        await wb_read(ctx, dut.bus, 0x2008)
        await wb_read(ctx, dut.bus, 0x2004)        # write-only: reads 0

    async def watch(ctx):
        async for _, _, stb, op, rd in ctx.tick().sample(dut.bank.cmd.op_stb, dut.bank.cmd.op, dut.bank.stat.pop_rd):
            if stb:
                seen.append(("op", op))
            if rd:
                seen.append("pop")
    from amaranth.sim import Simulator
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert seen == [("op", 0x5A), "pop"]


def _bus(address_bits):
    """A subordinate-side bus interface (no component behind it: only its address width matters here)."""
    return wishbone_signature(address_bits).flip().create()


@pytest.mark.parametrize("windows, msg", [
    ([("a", 0x10, 64)], r"base 0x10 is not aligned to its size 0x40"),
    ([("a", 0, 48)], r"size must be a power of two >= 4 bytes, not 0x30"),
    ([("a", 0, 64), ("b", 0, 64)], r"Window 'b' at 0x0 overlaps 'a' at 0x0"),
    ([("a", 0xFFFF_FFC0, 128)], r"is not aligned|outside the 32-bit address space"),
])
def test_window_errors(windows, msg):
    with pytest.raises(ValueError, match=msg):
        for n, (name, base, size) in enumerate(windows):
            check_window(name, base, size, windows[:n])


def test_decoder_checks_windows_and_bus_width():
    decoder = Decoder()
    decoder.add("a", _bus(4), base=0, size=64)
    with pytest.raises(ValueError, match=r"Window 'b' at 0x20 overlaps 'a' at 0x0"):
        decoder.add("b", _bus(4), base=0x20, size=32)
    with pytest.raises(ValueError, match=r"its bus has 2 address bits, the window needs 4"):
        decoder.add("c", _bus(2), base=0x40, size=64)
    Fragment.get(decoder, None)         # a decoder with one window elaborates


def test_register_errors():
    class Wide(Register):
        fields = [Field("a", 20, "rw"), Field("b", 20, "rw")]
    with pytest.raises(ValueError, match=r"^Register 'x': fields take 40 bits, more than 32$"):
        Wide("x")
    with pytest.raises(ValueError, match=r"access must be one of r, rw, w, rc, not 'x'"):
        Field("f", 1, "x")
    with pytest.raises(ValueError, match=r"^Image of 100 bytes does not fit in 64 bytes of RAM$"):
        SRAM(size=64, init=bytes(100))

    class Twice(Register):
        fields = [Field("a", 1, "rw"), Field("a", 2, "r")]
    with pytest.raises(ValueError, match=r"^Register 'x': field name 'a' is used twice$"):
        Twice("x")

    class Strobe(Register):
        fields = [Field("go", 1, "w"), Field("go_stb", 1, "r")]
    with pytest.raises(ValueError, match=r"field name 'go_stb' is used twice"):
        Strobe("x")
    with pytest.raises(ValueError, match=r"^Field 'f': reset value must be an integer in range \[0, 7\], not 8$"):
        Field("f", 3, "rw", reset=8)
    with pytest.raises(ValueError, match=r"reset value must be an integer in range \[0, 127\], not 200"):
        _Ctrl("c", reset={"mode": 200})
    with pytest.raises(ValueError, match=r"has no read-write field 'nope' to reset"):
        _Ctrl("c", reset={"nope": 1})
    with pytest.raises(ValueError, match=r"Field name must be a Python identifier"):
        Field("2x", 1, "r")
    with pytest.raises(ValueError, match=r"register names must be unique and not 'bus'"):
        RegisterBank("dev", [_Cmd("bus")])


def test_register_driver_encodes_from_the_map():
    regs = Registers([_Ctrl("ctrl"), _Cmd("cmd"), _Stat("stat")], base=0x2000)
    assert regs.address("stat") == 0x2008
    assert regs.encode("ctrl", enable=1, mode=5, count=0x1234) == 1 | 5 << 1 | 0x1234 << 8
    assert regs.encode("ctrl", count=-1) == 0xFFFF << 8
    assert regs.decode("stat", 0xABC | 0x12 << 12) == {"value": 0xABC, "pop": 0x12}
    assert regs.mask("ctrl", "mode") == 0x7F << 1
    with pytest.raises(KeyError, match="has no field 'speed'"):
        regs.encode("ctrl", speed=1)
    with pytest.raises(ValueError, match="ctrl.mode: 200 does not fit in 7 bits"):
        regs.encode("ctrl", mode=200)


def test_header_matches_register_map():
    mm = memory_map()
    header = c_header(mm)
    defines = dict(re.findall(r"#define (\w+)_ADDR 0x([0-9a-f]+)u", header))
    # every register, as the firmware's header and the host's driver each give its address
    addresses = {f"{name}_{reg.name}".upper(): Registers(registers, base).address(reg.name)
                 for name, base, _, registers, _ in mm.entries for reg in registers or ()}
    assert len(defines) == len(addresses) > 5
    assert {key: int(value, 16) for key, value in defines.items()} == addresses
    for name, base, size, _, _ in mm.entries:
        assert f"#define {name.upper()}_BASE 0x{base:08x}u" in header


def test_firmware_sources_hold_no_addresses():
    for path in FIRMWARE_DIR.iterdir():
        if path.suffix in (".c", ".h", ".S"):
            assert not re.search(r"0x[89a-f][0-9a-f]{7}", path.read_text(), re.I), path


def run_soc(image, max_cycles, **soc_args):
    soc = SoC(firmware=image, uart_divisor=1, **soc_args)
    out, res = [], {}

    async def bench(ctx):
        n = 0
        async for _, _, stb, byte, ex, code in ctx.tick().sample(soc.uart_sent_stb, soc.uart_sent_data,
                                                                 soc.exit_stb, soc.exit_code):
            n += 1
            if stb:
                out.append(byte)
            if ex:
                res["code"] = code
                break
            if n >= max_cycles:
                break
        res["cycles"] = n
    run(soc, [bench], deadline=max_cycles + 10)
    return bytes(out).decode(), res


def test_firmware_runs_in_pysim(hello):
    text, res = run_soc(hello, 8000)
    assert text.startswith("hello from insitu: sum=55 cycles=") and text.endswith("\n")
    assert res["code"] == 0 and res["cycles"] < 8000


def test_rom_and_spram_layout_runs_in_pysim(tmp_path):
    """The iCE40UP5K layout: code in a ROM at 0, .data copied by crt0 into the (SPRAM) RAM at 0x10000000,
    .bss zeroed, the stack at the RAM's top."""
    pytest.importorskip("ziglang")
    src = tmp_path / "layout.c"
    src.write_text('''#include "runtime.h"
static volatile uint32_t table[4] = {3, 1, 4, 1};
static volatile uint32_t zeroed[3];
int main(void) {
    table[1] += 5;
    zeroed[2] += 7;
    uart_putdec(table[0] + table[1] + table[2] + table[3]);
    uart_putc(' ');
    uart_putdec(zeroed[0] + zeroed[1] + zeroed[2]);
    uart_putc(' ');
    uart_putdec((uint32_t)&table[0] >> 28);
    uart_putc('\\n');
    return 0;
}
''')
    layout = dict(ram_size=65536, rom_size=2048)
    mm = memory_map(**layout)
    assert [(n, b, s) for n, b, s, bank, _ in mm.entries if bank is None] == [("rom", 0, 2048), ("ram", 1 << 28, 65536)]
    image = build_firmware([src], tmp_path / "build", memory_map=mm, ram_size=65536, stack=256)
    assert len(image) < 2048
    text, res = run_soc(image, 12000, **layout)
    assert text == "14 7 1\n" and res["code"] == 0
    with pytest.raises(FirmwareError, match=r"^Firmware does not fit in 256 bytes of ROM"):
        build_firmware([src], tmp_path / "small", memory_map=memory_map(ram_size=65536, rom_size=256),
                       ram_size=65536)


def test_missing_compiler(monkeypatch, tmp_path):
    import builtins
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "ziglang":
            raise ImportError(name)
        return real(name, *args, **kwargs)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(CompilerMissing, match=r"install ziglang \(pip install ziglang\) or set CC"):
        build_firmware([FIRMWARE_DIR / "hello.c"], tmp_path, memory_map=memory_map(), ram_size=16384)
    monkeypatch.setenv("CC", "no-such-riscv-gcc -march=rv32i")
    with pytest.raises(CompilerMissing, match=r"^Compiler 'no-such-riscv-gcc' \(from CC\) not found$"):
        build_firmware([FIRMWARE_DIR / "hello.c"], tmp_path, memory_map=memory_map(), ram_size=16384)


def test_image_too_large_and_compile_error(tmp_path):
    pytest.importorskip("ziglang")
    with pytest.raises(FirmwareError, match=r"^Firmware does not fit in 256 bytes of RAM \(the linker's words: "):
        build_firmware([FIRMWARE_DIR / "hello.c"], tmp_path, memory_map=memory_map(), ram_size=256)
    with pytest.raises(FirmwareError, match=r"^Firmware image \(code, data and .bss\) plus 1024 bytes of stack does "
                                             r"not fit in 1024 bytes of RAM$"):
        build_firmware([FIRMWARE_DIR / "hello.c"], tmp_path, memory_map=memory_map(), ram_size=1024)
    assert len(build_firmware([FIRMWARE_DIR / "hello.c"], tmp_path, memory_map=memory_map(), ram_size=1024,
                              stack=128)) < 1024
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undeclared; }\n")
    with pytest.raises(FirmwareError, match=r"^Firmware compilation failed:"):
        build_firmware([bad], tmp_path, memory_map=memory_map(), ram_size=16384)

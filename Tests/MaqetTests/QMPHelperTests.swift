import Foundation
import MaqetCore
import XCTest

/// A QEMU with a display (`-vga std`) and one QMP monitor, paused before its CPUs start (-S),
/// for the helpers that need a machine rather than `-machine none`: screendump, device-add.
/// `stop()` kills and reaps it.
final class DisplayQEMU {
    let dir = ShortTempDir()
    let process: Subprocess
    var monitor: String { dir.file("m.sock") }

    init(machine: String = "pc") throws {
        let arguments = ["qemu-system-x86_64", "-machine", machine, "-accel", "tcg", "-S", "-display", "none", "-nodefaults",
                         "-vga", "std", "-name", "qmphelpers",
                         "-chardev", "socket,id=m,path=\(dir.file("m.sock")),server=on,wait=off", "-mon", "chardev=m,mode=control"]
        var options = Subprocess.Options(arguments: arguments)
        options.stdout = .discard
        options.stderr = .discard
        process = try Subprocess(options)
        let deadline = monotonicMs() + 10_000
        while !FileManager.default.fileExists(atPath: monitor) {
            guard process.isRunning, monotonicMs() < deadline else {
                process.close()
                throw SystemError(errno: ETIMEDOUT, "QEMU did not create its monitor socket")
            }
            usleep(10_000)
        }
    }

    func stop() { process.close() }

    deinit { process.close() }
}

/// `maqet qmp NAME HELPER ...` and the published order `maqet qmp HELPER NAME ...`, against real
/// QEMUs: keys and type with the real guest (QEMU's own input trace shows what its keyboard got),
/// screendump and device-add on a paused q35/pc machine with a VGA card.
final class QMPHelperTests: SandboxTestCase {
    override class var stopsLeftoversFirst: Bool { true }

    /// A `running` row for `qemu` (its pid, its monitor), as a started VM has.
    func insertVM(_ sandbox: Sandbox, _ name: String, _ qemu: DisplayQEMU) {
        sandbox.runScript("""
            local name, pid, socket = ...
            assert(maqet.db:exec("INSERT INTO vm_instances (id, name, config_data, status, qmp_socket_path, pid) VALUES (?, ?, '{}', 'running', ?, ?)",
              "id-" .. name .. "-0000000000", name, socket, tonumber(pid)))
            """, name: "insert.lua", args: [name, String(qemu.process.pid), qemu.monitor]).assertExit(0)
    }

    /// The keys QEMU's input layer received, from its `input_event_key_qcode` trace: "+key" for a
    /// press, "-key" for a release.
    func keyEvents(_ path: String) -> [String] {
        serialText(path).split(separator: "\n").compactMap { line in
            guard let range = line.range(of: "key qcode ") else { return nil }
            let rest = line[range.upperBound...].split(separator: ",")
            guard rest.count == 2 else { return nil }
            return (rest[1].hasSuffix("1") ? "+" : "-") + rest[0]
        }
    }

    func testKeysAndTypeReachTheGuestsKeyboardInOrder() throws {
        let sandbox = makeSandbox()
        let trace = sandbox.root.file("input.trace")
        var vm = GuestVM(name: "kb")
        vm.extraArguments = ["d: trace:input_event_key_qcode", "D: \(yamlQuoted(trace))"]
        try sandbox.addGuest(vm)
        sandbox.maqet(["start", "kb"]).assertExit(0)

        // Maqet's order and the published order.
        let keys = sandbox.maqet(["qmp", "kb", "keys", "shift", "a", "--hold-time", "10"])
        keys.assertExit(0)
        XCTAssertEqual(keys.stdout, "kb: pressed shift+a\n")
        let typed = sandbox.maqet(["qmp", "type", "kb", "Hi !", "--hold-time", "10", "--format", "json"])
        typed.assertExit(0)
        let result = try JSONValue.parse(typed.stdout)
        XCTAssertEqual(result["characters"], .integer(4))
        XCTAssertEqual(result["chords"], .array([.array([.string("shift"), .string("h")]), .array([.string("i")]),
                                                 .array([.string("spc")]), .array([.string("shift"), .string("1")])]))

        let expected = ["+shift", "+a", "-shift", "-a",
                        "+shift", "+h", "-shift", "-h", "+i", "-i", "+spc", "-spc", "+shift", "+1", "-shift", "-1"]
        let deadline = Date().addingTimeInterval(30)
        while keyEvents(trace).count < expected.count && Date() < deadline { usleep(50_000) }
        // QEMU releases the keys of one chord in the order it pressed them or the reverse;
        // the presses, in order, are what typing depends on.
        let events = keyEvents(trace)
        XCTAssertEqual(events.filter { $0.hasPrefix("+") }, expected.filter { $0.hasPrefix("+") }, events.joined(separator: " "))
        XCTAssertEqual(events.filter { $0.hasPrefix("-") }.sorted(), expected.filter { $0.hasPrefix("-") }.sorted())

        // A key QEMU does not know is its error, exit 1, and nothing is pressed.
        let bad = sandbox.maqet(["qmp", "kb", "keys", "ctrl", "nosuchkey"])
        bad.assertExit(1)
        assertContains(bad.stderr, "nosuchkey")
        sandbox.maqet(["stop", "kb", "--force"]).assertExit(0)
        XCTAssertEqual(keyEvents(trace).count, events.count)
    }

    func testTypeNamesEveryCharacterItCannotTypeBeforeLookingAtTheVM() {
        let sandbox = makeSandbox()
        // No such VM: the text is refused first, so nothing could have been sent.
        let result = sandbox.maqet(["qmp", "nosuchvm", "type", "caf\u{e9} \u{1} ok \u{e9}"])
        result.assertExit(64)
        XCTAssertEqual(result.stderr, "maqet: qmp type: cannot type '\u{e9}' (U+00E9) at position 4, U+0001 (a control character) at position 6: only printable ASCII, newlines and tabs can be typed (US layout); nothing was sent\n")
        XCTAssertEqual(result.stdout, "")
        // Every printable ASCII character can be typed: the check passes and the lookup fails.
        let ascii = String((0x20...0x7E).map { Character(Unicode.Scalar(UInt8($0))) })
        let all = sandbox.maqet(["qmp", "nosuchvm", "type", "--", ascii + "\t\n"])
        all.assertExit(5)
        XCTAssertEqual(all.stderr, "maqet: no VM named 'nosuchvm' (see 'maqet ls')\n")
    }

    func testScreendumpIsPNGOrPPMRelativeToTheCallersDirectory() throws {
        let qemu = try DisplayQEMU(machine: "q35")
        defer { qemu.stop() }
        let sandbox = makeSandbox()
        insertVM(sandbox, "screen", qemu)
        let work = sandbox.root.file("work")
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)

        let png = sandbox.maqet(["qmp", "screen", "screendump", "shot.png"], cwd: work)
        png.assertExit(0)
        XCTAssertEqual(png.stdout, "screen: wrote \(work)/shot.png (png)\n")
        let pngBytes = try Data(contentsOf: URL(fileURLWithPath: work + "/shot.png"))
        XCTAssertEqual(Array(pngBytes.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])

        let ppm = sandbox.maqet(["qmp", "screendump", "screen", "shot.ppm", "--format", "json"], cwd: work)
        ppm.assertExit(0)
        let result = try JSONValue.parse(ppm.stdout)
        XCTAssertEqual(result["file"], .string(work + "/shot.ppm"))
        XCTAssertEqual(result["format"], .string("ppm"))
        let ppmBytes = try Data(contentsOf: URL(fileURLWithPath: work + "/shot.ppm"))
        XCTAssertEqual(String(decoding: ppmBytes.prefix(3), as: UTF8.self), "P6\n")

        // QMP's own screendump, with its own arguments, is sent as it is.
        let raw = sandbox.maqet(["qmp", "screen", "screendump", "filename=\(work)/raw.ppm"])
        raw.assertExit(0)
        XCTAssertEqual(raw.stdout, "{}\n")
        XCTAssertEqual(String(decoding: try Data(contentsOf: URL(fileURLWithPath: work + "/raw.ppm")).prefix(3), as: UTF8.self), "P6\n")
    }

    func testBothOrdersPauseResumeDeviceAddDelAndRun() throws {
        let qemu = try DisplayQEMU(machine: "pc")
        defer { qemu.stop() }
        let sandbox = makeSandbox()
        insertVM(sandbox, "hp", qemu)

        // A raw command still works with the VM first.
        let status = sandbox.maqet(["qmp", "hp", "query-status", "--compact"])
        status.assertExit(0)
        XCTAssertEqual(status.stdout, #"{"status":"prelaunch","singlestep":false,"running":false}"# + "\n")

        // `maqet qmp pause myvm` (published order) and `maqet qmp myvm resume` are maqet pause/resume.
        let paused = sandbox.maqet(["qmp", "pause", "hp"])
        paused.assertExit(0)
        XCTAssertEqual(paused.stdout, "hp: paused (status paused)\n")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT status FROM vm_instances WHERE name = 'hp'"), "paused\n")
        sandbox.maqet(["qmp", "hp", "pause"]).assertExit(3) // already paused: refused, as `maqet pause`
        let resumed = sandbox.maqet(["qmp", "hp", "resume"])
        resumed.assertExit(0)
        XCTAssertEqual(resumed.stdout, "hp: resumed (status running)\n")

        // device-add with properties, seen through `run` with key=value arguments; then device-del.
        let added = sandbox.maqet(["qmp", "device-add", "hp", "e1000", "nic1", "mac=52:54:00:12:34:56"])
        added.assertExit(0)
        XCTAssertEqual(added.stdout, "hp: added device nic1 (e1000)\n")
        let mac = sandbox.maqet(["qmp", "hp", "run", "qom-get", "path=/machine/peripheral/nic1", "property=mac"])
        mac.assertExit(0)
        XCTAssertEqual(mac.stdout, "\"52:54:00:12:34:56\"\n")
        let json = sandbox.maqet(["qmp", "run", "hp", "qom-get", #"{"path": "/machine/peripheral/nic1", "property": "mac"}"#])
        XCTAssertEqual(json.stdout, mac.stdout)
        sandbox.maqet(["qmp", "hp", "device-del", "nic1"]).assertExit(0)
        let again = sandbox.maqet(["qmp", "hp", "device-add", "e1000", "nic1", "bogus=1"])
        again.assertExit(1)
        assertContains(again.stderr, "maqet: QMP error")

        // Wrong shapes are usage errors naming what to type.
        let missing = sandbox.maqet(["qmp", "hp", "device-add", "e1000"])
        missing.assertExit(64)
        assertContains(missing.stderr, "maqet qmp hp device-add DRIVER ID")
        sandbox.maqet(["qmp", "pause"]).assertExit(64)
        sandbox.maqet(["qmp", "hp", "screendump"]).assertExit(64)
    }
}

import Foundation
import XCTest

/// The config checks that keep a VM definition from running something that is not QEMU or
/// attaching host system files: `binary` must be a QEMU system emulator (or say knowingly it is
/// not), paths inside `arguments` get the storage check, `allow_system_paths` lets one through on
/// purpose. Each through the real binary, real QEMU and real SQLite.
final class ConfigSafetyTests: XCTestCase {
    /// Inserts a row the way an adopted (Python maqet) database has it: never validated by maqet.
    func insertRow(_ sandbox: Sandbox, _ name: String, _ config: String) {
        let id = UUID().uuidString.lowercased()
        let sql = "INSERT INTO vm_instances (id, name, config_data, status) VALUES ('\(id)', '\(name)', '\(config.replacingOccurrences(of: "'", with: "''"))', 'created')"
        XCTAssertEqual(runProcess("/usr/bin/sqlite3", [sandbox.databasePath, sql], environment: ProcessInfo.processInfo.environment).code, 0)
    }

    /// Every refusal: exit 64, one `maqet:` line containing `message`, nothing on stdout.
    func assertRefused(_ result: CLIResult, _ message: String, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.code, 64, "\(label): exit \(result.code)\n\(result.stderr)", file: file, line: line)
        XCTAssertTrue(result.stderr.hasPrefix("maqet: "), "\(label): \(result.stderr)", file: file, line: line)
        XCTAssertEqual(result.stderr.filter { $0 == "\n" }.count, 1, "\(label): not one line: \(result.stderr)", file: file, line: line)
        assertContains(result.stderr, message, file: file, line: line)
        XCTAssertEqual(result.stdout, "", label, file: file, line: line)
    }

    // MARK: binary

    func testBinaryMustBeAQEMUSystemEmulator() throws {
        let sandbox = Sandbox()
        sandbox.maqet(["add", sandbox.write("ok.yaml", "binary: qemu-system-x86_64\nmemory: 64M\n"), "--name", "ok"]).assertExit(0)
        // A program named like QEMU that is not: found by its answer to -version.
        let impostor = sandbox.root.file("bin/qemu-system-x86_64")
        try FileManager.default.createDirectory(atPath: sandbox.root.file("bin"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: impostor, withDestinationPath: "/bin/sh")
        let echoing = sandbox.write("bin2/qemu-system-arm", "#!/bin/sh\necho 'not a QEMU at all'\n")
        XCTAssertEqual(chmod(echoing, 0o755), 0)
        let before = dump(sandbox.databasePath)
        let cases: [(label: String, yaml: String, message: String)] = [
            ("/bin/sh", "binary: /bin/sh\n", "binary: /bin/sh is not a QEMU system emulator (its name is not qemu-system-*)"),
            ("sh from PATH", "binary: sh\n", "is not a QEMU system emulator"),
            ("named qemu-img", "binary: qemu-img\n", "is not a QEMU system emulator"),
            ("a shell named qemu-system-x86_64", "binary: bin/qemu-system-x86_64\n",
             "binary: \(impostor) does not answer '-version' with 'QEMU emulator version'"),
            ("a script that prints something else", "binary: bin2/qemu-system-arm\n", "(it printed something else), so it is not QEMU"),
            ("binary_is_qemu not a boolean", "binary: /bin/sh\nbinary_is_qemu: 'no'\n", "binary_is_qemu: must be true or false"),
        ]
        for c in cases {
            let result = sandbox.maqet(["add", sandbox.write("b.yaml", c.yaml), "--name", "x"])
            assertRefused(result, c.message, c.label)
            assertContains(result.stderr, "binary_is_qemu")
            // apply of the same to the existing VM: refused the same way, nothing changed.
            assertRefused(sandbox.maqet(["apply", "ok", sandbox.write("b.yaml", c.yaml)]), c.message, "apply " + c.label)
        }
        XCTAssertEqual(dump(sandbox.databasePath), before)

        // The documented way to run a wrapper on purpose.
        sandbox.maqet(["add", sandbox.write("w.yaml", "binary: bin2/qemu-system-arm\nbinary_is_qemu: false\n"), "--name", "wrapped"]).assertExit(0)
        sandbox.maqet(["add", sandbox.write("s.yaml", "binary: /bin/sh\nbinary_is_qemu: false\n"), "--name", "shell"]).assertExit(0)
        let shown = sandbox.maqet(["show-cmd", "shell"])
        shown.assertExit(0)
        XCTAssertTrue(shown.stdout.hasPrefix("/bin/sh "), shown.stdout)
    }

    /// A row maqet never validated (adopted from another database) with `binary: /bin/sh` is not
    /// run by `start`: exit 64 naming the binary, the row unchanged, no process left.
    func testStartRefusesAnAdoptedRowWhoseBinaryIsNotQEMU() {
        let sandbox = Sandbox()
        sandbox.maqet(["add", sandbox.write("ok.yaml", "memory: 64M\n"), "--name", "ok"]).assertExit(0)
        // Evidence the shell would have run: it reads the file 'guest=adopted' as a script.
        let marker = sandbox.root.file("ran")
        sandbox.write("guest=adopted", "touch \(marker)\n")
        insertRow(sandbox, "adopted", #"{"binary": "/bin/sh", "display": "none"}"#)
        let before = dump(sandbox.databasePath)
        let result = sandbox.maqet(["start", "adopted", "--timeout", "10"], cwd: sandbox.home)
        assertRefused(result, "VM 'adopted' was not started: binary /bin/sh is not a QEMU system emulator", "start")
        assertContains(result.stderr, "maqet apply adopted")
        XCTAssertFalse(FileManager.default.fileExists(atPath: marker), "/bin/sh was run")
        XCTAssertEqual(dump(sandbox.databasePath), before)
        XCTAssertEqual(processes(of: sandbox), [])
    }

    // MARK: paths inside arguments

    func testPathsInArgumentsGetTheStorageCheck() throws {
        let sandbox = Sandbox()
        sandbox.maqet(["add", sandbox.write("ok.yaml", "memory: 64M\n"), "--name", "ok"]).assertExit(0)
        try FileManager.default.createSymbolicLink(atPath: sandbox.root.file("innocent.img"), withDestinationPath: "/etc/shadow")
        let cases: [(label: String, yaml: String, message: String)] = [
            ("drive string", "arguments:\n  - machine: q35\n  - drive: \"file=/etc/shadow,format=raw,if=virtio\"\n",
             "arguments[2]: drive file=/etc/shadow is in the system directory /etc"),
            ("drive mapping", "arguments:\n  - drive: {file: /etc/shadow, format: raw}\n", "arguments[1]: drive file=/etc/shadow is in the system directory /etc"),
            ("one string item", "arguments:\n  - \"drive file=/etc/shadow\"\n", "arguments[1]: drive file=/etc/shadow"),
            ("kernel", "arguments:\n  - kernel: /boot/vmlinuz\n", "arguments[1]: kernel /boot/vmlinuz is in the system directory /boot"),
            ("initrd via ..", "arguments:\n  - initrd: /tmp/../etc/passwd\n", "initrd /tmp/../etc/passwd (/etc/passwd) is in the system directory /etc"),
            ("bios", "arguments:\n  - bios: /usr/share/qemu/bios.bin\n", "bios /usr/share/qemu/bios.bin is in the system directory /usr"),
            ("symlink to /etc/shadow", "arguments:\n  - drive: \"file=\(sandbox.root.file("innocent.img")),format=raw\"\n",
             "(/etc/shadow) is in the system directory /etc"),
            ("blockdev filename", "arguments:\n  - blockdev: \"driver=file,node-name=d,filename=/dev/sda\"\n", "blockdev filename=/dev/sda is in the system directory /dev"),
            ("blockdev json:", "arguments:\n  - blockdev: 'driver=raw,node-name=d,file=json:{\"file\": {\"filename\": \"/etc/shadow\"}}'\n",
             "filename=/etc/shadow is in the system directory /etc"),
            ("chardev path", "arguments:\n  - chardev: \"file,id=c,path=/etc/cron.d/x\"\n", "chardev path=/etc/cron.d/x is in the system directory /etc"),
            ("device loader file", "arguments:\n  - device: \"loader,file=/etc/shadow,addr=0x1000\"\n", "device file=/etc/shadow"),
            ("comma escaped", "arguments:\n  - drive: \"file=/etc/a,,b,format=raw\"\n", "drive file=/etc/a,b is in the system directory /etc"),
            ("-serial file:", "arguments:\n  - serial: file:/etc/motd\n", "serial file:/etc/motd is in the system directory /etc"),
            ("serial key", "serial: file:/etc/motd\n", "serial: file:/etc/motd is in the system directory /etc"),
            ("allow list not a list", "allow_system_paths: /etc/shadow\n", "allow_system_paths: must be a list of absolute paths"),
            ("allow list relative", "allow_system_paths: [etc/shadow]\n", "allow_system_paths: 'etc/shadow' is not an absolute path"),
        ]
        let before = dump(sandbox.databasePath)
        for c in cases {
            let result = sandbox.maqet(["add", sandbox.write("a.yaml", c.yaml), "--name", "x"])
            assertRefused(result, c.message, c.label)
            if c.label.hasPrefix("allow") == false { assertContains(result.stderr, "allow_system_paths") }
        }
        XCTAssertEqual(dump(sandbox.databasePath), before)

        // Host files outside system directories pass; so does a value that only looks like a path.
        let kernel = sandbox.write("vmlinuz", "")
        sandbox.maqet(["add", sandbox.write("fine.yaml", """
            arguments:
              - kernel: \(yamlQuoted(kernel))
              - append: "console=ttyS0 root=/dev/vda"
              - device: "virtio-blk-pci,drive=d0"
              - object: "rng-random,id=rng0,filename=/dev/urandom"
            serial: "file:/dev/null"
            """), "--name", "fine"]).assertExit(0)

        // The documented way to attach a system path on purpose: allow_system_paths, for arguments
        // and storage alike (a listed directory allows what is below it).
        let allowed = sandbox.maqet(["add", sandbox.write("allowed.yaml", """
            allow_system_paths: [/etc/shadow, /usr/share/qemu]
            arguments:
              - drive: "file=/etc/shadow,format=raw,if=virtio"
              - bios: /usr/share/qemu/bios.bin
            storage:
              - {name: disk, type: raw, file: /usr/share/qemu/x.img}
            """), "--name", "allowed"])
        allowed.assertExit(0)
        let shown = sandbox.maqet(["show-cmd", "allowed"])
        shown.assertExit(0)
        assertContains(shown.stdout, "-drive file=/etc/shadow,format=raw,if=virtio")
        // Without the list entry, the same storage item is refused as before.
        assertRefused(sandbox.maqet(["add", sandbox.write("st.yaml", "storage:\n  - {name: disk, type: raw, file: /usr/share/qemu/x.img}\n"), "--name", "y"]),
                      "storage 'disk': file /usr/share/qemu/x.img is in the system directory /usr", "storage")
    }

    // MARK: size

    /// A config file over the 16 MiB limit is bad input (64), not "not found" (5).
    func testConfigFileOver16MiBIsAUsageError() {
        let sandbox = Sandbox()
        let big = sandbox.write("big.yaml", "# " + String(repeating: "x", count: 16 << 20) + "\nmemory: 64M\n")
        assertRefused(sandbox.maqet(["add", big, "--name", "big"]), "config file \(big): larger than 16 MiB, not a VM definition", "add")
        assertRefused(sandbox.maqet(["apply", "big", big]), "larger than 16 MiB", "apply")
        XCTAssertFalse(FileManager.default.fileExists(atPath: sandbox.databasePath))
    }
}

import Foundation
import XCTest

/// Faults of the state files, with the real binary on real files: who may read them, side files
/// from another database, a full or read-only file system, a foreign owner, damaged main files,
/// maqet killed mid-write and mid-migration, many processes at once.
final class StateFaultTests: SandboxTestCase {
    private var mounts: [String] = []
    private var children: [Process] = []

    override func tearDown() {
        for child in children where child.isRunning { kill(child.processIdentifier, SIGKILL); child.waitUntilExit() }
        children.removeAll()
        for mount in mounts.reversed() { _ = runProcess("/usr/bin/umount", ["-l", mount], environment: [:]) }
        mounts.removeAll()
        super.tearDown()
    }

    // MARK: Helpers

    func mode(_ path: String) -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else { return -1 }
        return Int(info.st_mode & 0o7777)
    }

    func requireRoot() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root (mounts a tmpfs / switches user)") }
    }

    /// Mounts a tmpfs of `kib` KiB at `path` (unmounted in tearDown).
    func mountTmpfs(_ path: String, kib: Int) throws {
        try requireRoot()
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let result = runProcess("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=\(kib)k,mode=0700", "tmpfs", path], environment: [:])
        guard result.code == 0 else { throw XCTSkip("cannot mount a tmpfs: \(result.stderr)") }
        mounts.append(path)
    }

    /// SHA-256 of every file in `directory`, by name.
    func hashes(_ directory: String) -> [String: String] {
        var result: [String: String] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            result[name] = fileSHA((directory as NSString).appendingPathComponent(name))
        }
        return result
    }

    func writeConfig(_ sandbox: Sandbox) -> String {
        sandbox.write("vm.yaml", "binary: /usr/bin/qemu-system-x86_64\nmemory: 64M\n")
    }

    func names(_ sandbox: Sandbox) -> [String] {
        let result = sandbox.maqet(["ls", "--format", "plain"])
        result.assertExit(0)
        return result.stdout.split(separator: "\n").map { String($0.split(separator: " ")[0]) }.sorted()
    }

    /// A WAL that belongs to another database (a photo catalogue), saved while its writer had it open.
    func foreignWAL(_ sandbox: Sandbox) -> Data {
        let other = sandbox.root.file("other.db")
        let saved = sandbox.root.file("other.wal")
        let script = "PRAGMA journal_mode=WAL;\nPRAGMA wal_autocheckpoint=0;\nCREATE TABLE photos(id INTEGER PRIMARY KEY, path TEXT);\nINSERT INTO photos(path) VALUES ('/a.jpg');\n.system cp \(other)-wal \(saved)\n"
        runProcess("/usr/bin/sqlite3", [other], environment: ProcessInfo.processInfo.environment, stdin: script)
        let data = FileManager.default.contents(atPath: saved) ?? Data()
        XCTAssertGreaterThan(data.count, 32, "the foreign WAL was not saved")
        return data
    }

    /// A hot rollback journal of another database: saved while its writer was in a transaction
    /// that had already written pages to the database file.
    func foreignJournal(_ sandbox: Sandbox) -> Data {
        let other = sandbox.root.file("other-rollback.db")
        let saved = sandbox.root.file("other.journal")
        let script = """
            PRAGMA journal_mode=DELETE;
            PRAGMA cache_size=1;
            CREATE TABLE photos(id INTEGER PRIMARY KEY, path TEXT);
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) INSERT INTO photos(path) SELECT printf('/%05d.jpg', i) FROM c;
            CREATE TABLE vm_instances(x);
            BEGIN;
            UPDATE photos SET path = path || '.old';
            .system cp \(other)-journal \(saved)
            COMMIT;

            """
        runProcess("/usr/bin/sqlite3", [other], environment: ProcessInfo.processInfo.environment, stdin: script)
        let data = FileManager.default.contents(atPath: saved) ?? Data()
        XCTAssertGreaterThan(data.count, 512, "the foreign journal was not saved")
        return data
    }

    /// Starts `maqet ARGS` in the background; returns it and a reader of its stdout.
    func startMaqet(_ sandbox: Sandbox, _ arguments: [String]) throws -> (Process, FileHandle) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: maqetBinary)
        process.arguments = ["--maqet-data-dir", sandbox.dataDir] + arguments
        process.environment = testEnvironment(home: sandbox.home, extra: sandbox.extraEnvironment)
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        children.append(process)
        return (process, out.fileHandleForReading)
    }

    /// Reads `handle` until a line equal to `line` (bounded: gives up at end of file).
    func waitForLine(_ handle: FileHandle, _ line: String) -> Bool {
        var text = ""
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { return false }
            text += String(decoding: chunk, as: UTF8.self)
            if text.split(separator: "\n").contains(where: { $0 == line }) { return true }
        }
    }

    // MARK: Permissions

    func testEveryStateFileIsPrivate() throws {
        let sandbox = Sandbox()
        let config = writeConfig(sandbox)
        sandbox.maqet(["add", config, "--name", "web"]).assertExit(0)
        XCTAssertEqual(mode(sandbox.dataDir), 0o700)
        XCTAssertEqual(mode(sandbox.databasePath), 0o600)
        sandbox.maqet(["db", "backup"]).assertExit(0)
        let explicit = sandbox.root.file("copy.db")
        sandbox.maqet(["db", "backup", explicit]).assertExit(0)
        XCTAssertEqual(mode(explicit), 0o600)
        for name in sandbox.manualBackups { XCTAssertEqual(mode(sandbox.dataDir + "/" + name), 0o600, name) }
        XCTAssertFalse(sandbox.manualBackups.isEmpty)
        // An automatic backup (taken before a migration) and the logs.
        let old = Sandbox()
        old.installFixture("python-maqet-v1.db")
        chmod(old.databasePath, 0o600)
        chmod(old.dataDir, 0o700)
        old.maqet(["ls"]).assertExit(0)
        XCTAssertEqual(old.automaticBackups.count, 1)
        for name in old.automaticBackups { XCTAssertEqual(mode(old.dataDir + "/" + name), 0o600, name) }
        let logs = (sandbox.dataDir as NSString).appendingPathComponent("logs")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: logs)) ?? [] {
            XCTAssertEqual(mode(logs + "/" + name), 0o600, name)
        }
        if FileManager.default.fileExists(atPath: logs) { XCTAssertEqual(mode(logs), 0o700) }
    }

    func testWALAndSHMOfAWritingProcessArePrivate() throws {
        let sandbox = Sandbox()
        sandbox.maqet(["ls"]).assertExit(0)
        let script = sandbox.write("hold.lua", """
            assert(maqet.db:exec("INSERT INTO vm_instances (id, name, config_data, status) VALUES ('h1', 'held', '{}', 'created')"))
            print("ready")
            maqet.sleep(60000)
            """)
        let (process, output) = try startMaqet(sandbox, ["run", script])
        XCTAssertTrue(waitForLine(output, "ready"))
        XCTAssertEqual(mode(sandbox.databasePath + "-wal"), 0o600)
        XCTAssertEqual(mode(sandbox.databasePath + "-shm"), 0o600)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func testALooseDataDirectoryAndOldFilesAreTightened() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db") // as the Python maqet left it: 0644 in a 0755 directory
        chmod(sandbox.dataDir, 0o755)
        chmod(sandbox.databasePath, 0o644)
        let oldBackup = sandbox.dataDir + "/instances.db.backup-20250101-000000"
        try! FileManager.default.copyItem(atPath: sandbox.databasePath, toPath: oldBackup)
        chmod(oldBackup, 0o644)
        let before = vmRows(sandbox.databasePath)
        let result = sandbox.maqet(["ls"])
        result.assertExit(0)
        XCTAssertEqual(mode(sandbox.dataDir), 0o700)
        XCTAssertEqual(mode(sandbox.databasePath), 0o600)
        XCTAssertEqual(mode(oldBackup), 0o600)
        for name in sandbox.automaticBackups { XCTAssertEqual(mode(sandbox.dataDir + "/" + name), 0o600, name) }
        XCTAssertEqual(vmRows(sandbox.databasePath), before)
    }

    // MARK: Side files

    func testAStrayWALFromAnotherDatabaseIsRefusedAndEveryFileKept() {
        let sandbox = Sandbox()
        let config = writeConfig(sandbox)
        sandbox.maqet(["add", config, "--name", "web"]).assertExit(0)
        FileManager.default.createFile(atPath: sandbox.databasePath + "-wal", contents: foreignWAL(sandbox))
        let before = hashes(sandbox.dataDir)
        for args in [["ls"], ["db", "status"], ["add", config, "--name", "db"]] {
            let result = sandbox.maqet(args)
            result.assertExit(3)
            XCTAssertTrue(result.stderr.contains("instances.db-wal") && result.stderr.contains("move"), "\(args): \(result.stderr)")
            XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
            XCTAssertEqual(hashes(sandbox.dataDir), before, "\(args) changed a file")
        }
        // Moving the side file aside, as the message says, brings the VM back.
        XCTAssertNoThrow(try FileManager.default.moveItem(atPath: sandbox.databasePath + "-wal", toPath: sandbox.root.file("moved-wal")))
        XCTAssertEqual(names(sandbox), ["web"])
    }

    func testAHotJournalFromAnotherDatabaseIsRefusedAndEveryFileKept() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db") // rollback-journal mode, as the Python maqet made it
        FileManager.default.createFile(atPath: sandbox.databasePath + "-journal", contents: foreignJournal(sandbox))
        let before = hashes(sandbox.dataDir)
        let result = sandbox.maqet(["ls"])
        result.assertExit(3)
        XCTAssertTrue(result.stderr.contains("instances.db-journal"), result.stderr)
        XCTAssertEqual(hashes(sandbox.dataDir), before)
        XCTAssertTrue(sandbox.automaticBackups.isEmpty)
    }

    func testGarbageSideFilesNeverCostARow() {
        var generator = SystemRandomNumberGenerator()
        for trial in 0..<Campaign.trials(ci: 2, campaign: 20) {
            for suffix in ["-wal", "-journal"] {
                let sandbox = Sandbox()
                let config = writeConfig(sandbox)
                sandbox.maqet(["add", config, "--name", "web"]).assertExit(0)
                let before = vmRows(sandbox.databasePath, columns: ["id", "name", "config_data", "status"])
                // Random bytes, every other trial behind a valid magic number so SQLite reads on.
                var bytes = (0..<(4096 * 3 + 32)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if trial % 2 == 1 {
                    let magic: [UInt8] = suffix == "-wal" ? [0x37, 0x7F, 0x06, 0x82] : [0xD9, 0xD5, 0x05, 0xF9, 0x20, 0xA1, 0x63, 0xD7]
                    bytes.replaceSubrange(0..<magic.count, with: magic)
                }
                FileManager.default.createFile(atPath: sandbox.databasePath + suffix, contents: Data(bytes))
                let files = hashes(sandbox.dataDir)
                let result = sandbox.maqet(["ls", "--format", "plain"])
                if result.code == 3 {
                    XCTAssertTrue(result.stderr.contains("instances.db" + suffix), result.stderr)
                    XCTAssertEqual(hashes(sandbox.dataDir), files, "trial \(trial) \(suffix): a refusal changed a file")
                } else {
                    result.assertExit(0)
                    XCTAssertEqual(result.stdout.split(separator: " ").first, "web", "trial \(trial) \(suffix)")
                    XCTAssertEqual(vmRows(sandbox.databasePath, columns: ["id", "name", "config_data", "status"]), before, "trial \(trial) \(suffix)")
                }
            }
        }
    }

    func testMaqetsOwnCrashedWriteIsRecoveredAndNothingCommittedIsLost() throws {
        let sandbox = Sandbox()
        sandbox.maqet(["ls"]).assertExit(0)
        let trials = Campaign.trials(ci: 2, campaign: 10)
        for trial in 0..<trials {
            let script = sandbox.write("crash\(trial).lua", """
                assert(maqet.db:exec("INSERT INTO vm_instances (id, name, config_data, status) VALUES ('c\(trial)', 'kept\(trial)', '{}', 'created')"))
                assert(maqet.db:exec("BEGIN IMMEDIATE"))
                assert(maqet.db:exec("INSERT INTO vm_instances (id, name, config_data, status) VALUES ('u\(trial)', 'lost\(trial)', '{}', 'created')"))
                assert(maqet.db:exec("UPDATE vm_instances SET config_data = ? WHERE id = 'c\(trial)'", string.rep("x", 200000)))
                print("ready")
                maqet.sleep(60000)
                """)
            let (process, output) = try startMaqet(sandbox, ["run", script])
            XCTAssertTrue(waitForLine(output, "ready"))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            XCTAssertGreaterThan(SideFilesProbe.size(sandbox.databasePath + "-wal"), 0, "the kill left no WAL to recover")
            let listed = names(sandbox)
            XCTAssertEqual(listed, (0...trial).map { "kept\($0)" }.sorted())
            XCTAssertEqual(sqlite3(sandbox.databasePath, "PRAGMA integrity_check").trimmingCharacters(in: .whitespacesAndNewlines), "ok")
        }
    }

    // MARK: Disk full, read-only, foreign owner

    func testAddOnAFullDiskSaysSoAndWritesNothing() throws {
        let sandbox = Sandbox()
        let mount = sandbox.root.file("small")
        try mountTmpfs(mount, kib: 2048)
        let data = mount + "/data"
        let config = writeConfig(sandbox)
        let run = { (args: [String]) in runProcess(maqetBinary, args, environment: testEnvironment(home: sandbox.home, extra: ["MAQET_DATA_DIR": data])) }
        run(["ls"]).assertExit(0)
        // Fill the file system, then free a little more for each try: from nothing to room for one row.
        let filler = mount + "/filler"
        let fill = {
            let fd = open(filler, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            let block = [UInt8](repeating: 0, count: 4096)
            while write(fd, block, block.count) == block.count {}
            close(fd)
        }
        fill()
        let full = SideFilesProbe.size(filler)
        var added: [String] = []
        var refused = 0
        for kib in stride(from: 0, through: 160, by: 8) {
            truncate(filler, off_t(full - Int64(kib * 1024)))
            let name = "vm\(kib)"
            let before = hashes(data)
            let result = run(["add", config, "--name", name])
            if result.code == 0 {
                XCTAssertEqual(result.stdout, "Added VM '\(name)'\n")
                added.append(name)
                continue
            }
            refused += 1
            result.assertExit(1)
            XCTAssertTrue(result.stderr.hasPrefix("maqet: the file system holding \(data) is full"), result.stderr)
            XCTAssertFalse(result.stderr.contains(".lua:") || result.stderr.contains("INSERT"), result.stderr)
            XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
            XCTAssertEqual(hashes(data)["instances.db"], before["instances.db"], "a refused add changed instances.db")
        }
        // A manual backup on the full disk: one clear line, no file under a backup's name.
        fill()
        let backup = run(["db", "backup"])
        backup.assertExit(1)
        XCTAssertTrue(backup.stderr.contains("is full") && !backup.stderr.contains("SQLite error 13"), backup.stderr)
        XCTAssertEqual(hashes(data).keys.filter { $0.hasPrefix("instances.db.manual-") || $0.hasPrefix(".maqet-backup-") }, [])
        XCTAssertGreaterThan(refused, 0, "the disk never filled up")
        XCTAssertFalse(added.isEmpty, "no add got through once there was room")
        unlink(filler)
        let listed = run(["ls", "--format", "plain"])
        listed.assertExit(0)
        XCTAssertEqual(listed.stdout.split(separator: "\n").map { String($0.split(separator: " ")[0]) }.sorted(), added.sorted())
    }

    func testAReadOnlyFileSystemSaysSoAndChangesNothing() throws {
        let sandbox = Sandbox()
        let mount = sandbox.root.file("ro")
        try mountTmpfs(mount, kib: 4096)
        let data = mount + "/data"
        let config = writeConfig(sandbox)
        let run = { (args: [String]) in runProcess(maqetBinary, ["--maqet-data-dir", data] + args, environment: testEnvironment(home: sandbox.home)) }
        run(["add", config, "--name", "web"]).assertExit(0)
        XCTAssertEqual(runProcess("/usr/bin/mount", ["-o", "remount,ro", mount], environment: [:]).code, 0)
        let before = hashes(data)
        for args in [["ls"], ["add", config, "--name", "db"], ["db", "backup"]] {
            let result = run(args)
            XCTAssertEqual(result.code, 1, "\(args): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains("read-only"), "\(args): \(result.stderr)")
            XCTAssertFalse(result.stderr.contains("SQLite error 14"), result.stderr)
            XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
        }
        XCTAssertEqual(hashes(data), before)
    }

    func testAForeignOwnedDatabaseNamesOwnerModeAndFix() throws {
        try requireRoot()
        let sandbox = Sandbox()
        let config = writeConfig(sandbox)
        sandbox.maqet(["add", config, "--name", "web"]).assertExit(0)
        chmod(sandbox.home, 0o755)
        let nobody = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", maqetBinary, "--maqet-data-dir", sandbox.dataDir]
        let env = testEnvironment(home: "/nonexistent")
        // The data directory is root's (0700): nobody may not even look inside.
        var before = hashes(sandbox.dataDir)
        var result = runProcess(nobody[0], Array(nobody.dropFirst()) + ["ls"], environment: env)
        result.assertExit(1)
        XCTAssertTrue(result.stderr.contains("owned by root (uid 0), mode 0700") && result.stderr.contains("runs as nobody"), result.stderr)
        XCTAssertTrue(result.stderr.contains("chown"), result.stderr)
        XCTAssertEqual(hashes(sandbox.dataDir), before)
        // nobody's directory, root's database (0600).
        chown(sandbox.dataDir, 65534, 65534)
        before = hashes(sandbox.dataDir)
        result = runProcess(nobody[0], Array(nobody.dropFirst()) + ["add", config, "--name", "db"], environment: env)
        result.assertExit(1)
        XCTAssertTrue(result.stderr.contains("instances.db is owned by root (uid 0), mode 0600"), result.stderr)
        XCTAssertFalse(result.stderr.contains("SQLite error 14"), result.stderr)
        XCTAssertEqual(hashes(sandbox.dataDir), before)
        // nobody's own database, made read-only: SQLite would open it read-only without a word.
        chown(sandbox.databasePath, 65534, 65534)
        chmod(sandbox.databasePath, 0o400)
        before = hashes(sandbox.dataDir)
        result = runProcess(nobody[0], Array(nobody.dropFirst()) + ["add", config, "--name", "db"], environment: env)
        result.assertExit(1)
        XCTAssertTrue(result.stderr.contains("mode 0400") && result.stderr.contains("chmod 600"), result.stderr)
        XCTAssertEqual(hashes(sandbox.dataDir), before)
        chmod(sandbox.databasePath, 0o600)
        chown(sandbox.databasePath, 0, 0)
        chown(sandbox.dataDir, 0, 0)
        XCTAssertEqual(names(sandbox), ["web"])
    }

    // MARK: kill -9 during a large migration

    /// A Python v1 database with `rows` VM rows (rollback-journal mode, as the Python maqet made it).
    func largeV1Database(_ path: String, rows: Int) {
        let sql = pythonV1Schema + """
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < \(rows))
            INSERT INTO vm_instances (id, name, config_path, config_data, status, pid, created_at, updated_at)
            SELECT printf('id-%06d', i), printf('vm-%06d', i), printf('/cfg/vm-%06d.yaml', i),
                   printf('{"memory": "%dM", "cpu": %d, "disks": ["/var/lib/vm-%06d.qcow2"], "note": "%s"}', 64 + i % 512, 1 + i % 8, i, hex(randomblob(40))),
                   CASE i % 3 WHEN 0 THEN 'stopped' WHEN 1 THEN 'created' ELSE 'crashed' END,
                   NULL, '2025-01-02 03:04:05', '2025-01-02 03:04:06' FROM c;

            """
        let result = runProcess("/usr/bin/sqlite3", [path], environment: ProcessInfo.processInfo.environment, stdin: sql)
        XCTAssertEqual(result.code, 0, result.stderr)
    }

    /// The schema version of a database in either layout (the Python one: its highest row).
    func anyLayoutVersion(_ path: String) -> String {
        let columns = sqlite3(path, "SELECT name FROM pragma_table_info('schema_version')")
        let sql = columns.contains("value") ? "SELECT value FROM schema_version" : "SELECT max(version) FROM schema_version"
        return sqlite3(path, sql).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Copies `path` and the side files beside it into `directory` (so checking them recovers the copy).
    func copyWithSideFiles(_ path: String, into directory: String) -> String {
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let target = (directory as NSString).appendingPathComponent("instances.db")
        for suffix in ["", "-journal", "-wal"] where FileManager.default.fileExists(atPath: path + suffix) {
            try? FileManager.default.copyItem(atPath: path + suffix, toPath: target + suffix)
        }
        return target
    }

    func testKill9AtSpreadPointsOfALargeMigrationLosesNothing() throws {
        let rows = Campaign.isLong ? 100_000 : 20_000
        let trials = Campaign.trials(ci: 4, campaign: 32)
        let work = TempDir("maqet-kill-migration")
        let original = work.file("v1.db")
        largeV1Database(original, rows: rows)
        let expectedRows = vmRows(original)
        XCTAssertEqual(expectedRows.split(separator: "\n").count, rows)
        // How long a whole migration takes here: the kill points are spread over it.
        let timing = Sandbox()
        try FileManager.default.createDirectory(atPath: timing.dataDir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: original, toPath: timing.databasePath)
        let started = Date()
        timing.maqet(["db", "migrate"]).assertExit(0)
        let whole = Date().timeIntervalSince(started)
        var outcomes: [String: Int] = [:]
        for trial in 1...trials {
            let sandbox = Sandbox()
            try FileManager.default.createDirectory(atPath: sandbox.dataDir, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: original, toPath: sandbox.databasePath)
            let (process, _) = try startMaqet(sandbox, ["ls", "--format", "plain"])
            usleep(useconds_t(whole * 1.2 * Double(trial) / Double(trials + 1) * 1_000_000))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            // What is on disk now, recovered on a copy: the old version or the new, never between.
            let copy = copyWithSideFiles(sandbox.databasePath, into: sandbox.root.file("after-kill"))
            let version = anyLayoutVersion(copy)
            XCTAssertTrue(version == "1" || version == "7", "trial \(trial): version \(version)")
            outcomes[version, default: 0] += 1
            XCTAssertEqual(sqlite3(copy, "PRAGMA integrity_check").trimmingCharacters(in: .whitespacesAndNewlines), "ok", "trial \(trial)")
            XCTAssertTrue(vmRows(copy) == expectedRows, "trial \(trial): the rows differ after the kill")
            // A backup under its final name is whole and verifies.
            for name in sandbox.automaticBackups {
                let backup = sandbox.dataDir + "/" + name
                XCTAssertEqual(sqlite3(backup, "PRAGMA integrity_check").trimmingCharacters(in: .whitespacesAndNewlines), "ok", "trial \(trial): \(name)")
                XCTAssertEqual(anyLayoutVersion(backup), "1", "trial \(trial): \(name)")
                XCTAssertTrue(vmRows(backup) == expectedRows, "trial \(trial): \(name) holds other rows")
            }
            // The next command recovers maqet's own journal and finishes the migration.
            let next = sandbox.maqet(["ls", "--format", "plain"])
            next.assertExit(0)
            XCTAssertEqual(next.stdout.split(separator: "\n").count, rows, "trial \(trial)")
            XCTAssertEqual(sandbox.schemaVersion(), "7")
            XCTAssertTrue(vmRows(sandbox.databasePath) == expectedRows, "trial \(trial): the rows differ after migrating")
            XCTAssertLessThanOrEqual(sandbox.automaticBackups.count, 2, "trial \(trial)")
        }
        print("kill -9 of a \(rows)-row migration, \(trials) points over \(String(format: "%.2f", whole)) s: \(outcomes)")
    }

    // MARK: 32 processes on one database

    func testThirtyTwoMixedProcessesOnOneDatabase() throws {
        let guestless = #"{"memory": "64M", "display": "none", "arguments": [{"machine": "none"}, {"accel": "kvm"}]}"#
        for round in 0..<Campaign.trials(ci: 1, campaign: 5) {
            let sandbox = makeSandbox()
            let config = sandbox.write("guestless.yaml", guestless)
            for name in ["probe"] + (0..<4).flatMap({ ["up\($0)", "down\($0)"] }) {
                sandbox.maqet(["add", config, "--name", name]).assertExit(0)
            }
            for i in 0..<4 { sandbox.maqet(["start", "down\(i)"]).assertExit(0) }
            let writer = sandbox.write("writer.lua", """
                local n = tonumber(maqet.args[1])
                maqet.db:transaction(function(tx)
                    assert(tx:exec("INSERT INTO vm_instances (id, name, config_data, status) VALUES (?, ?, '{}', 'created')", "run-id-" .. n, "run" .. n))
                end)
                print("wrote run" .. n)
                """)
            var commands: [[String]] = []
            commands += (0..<6).map { _ in ["ls"] }
            commands += (0..<4).map { _ in ["status", "probe"] }
            commands += (0..<4).map { _ in ["db", "status"] }
            commands += (0..<4).map { ["run", writer, String($0)] }
            commands += (0..<6).map { ["add", config, "--name", "add\($0)"] }
            commands += (0..<4).map { ["start", "up\($0)"] }
            commands += (0..<4).map { ["stop", "down\($0)", "--timeout", "1"] }
            XCTAssertEqual(commands.count, 32)
            var results = [CLIResult?](repeating: nil, count: commands.count)
            let lock = NSLock()
            DispatchQueue.concurrentPerform(iterations: commands.count) { i in
                let result = sandbox.maqet(commands[i])
                lock.lock(); results[i] = result; lock.unlock()
            }
            for (i, result) in results.enumerated() {
                guard let result else { XCTFail("\(commands[i]) did not run"); continue }
                XCTAssertEqual(result.code, 0, "round \(round): \(commands[i]) exit \(result.code): \(result.stderr)")
                XCTAssertFalse(result.stderr.lowercased().contains("locked"), "\(commands[i]): \(result.stderr)")
            }
            let rows = sqlite3(sandbox.databasePath, "SELECT name || '=' || status FROM vm_instances ORDER BY name")
                .split(separator: "\n").map(String.init)
            var expected = ["probe=created"]
            expected += (0..<4).flatMap { ["up\($0)=running", "down\($0)=stopped", "run\($0)=created"] }
            expected += (0..<6).map { "add\($0)=created" }
            XCTAssertEqual(rows, expected.sorted(), "round \(round)")
            XCTAssertEqual(sandbox.automaticBackups, [], "nothing to migrate, so no backup")
            sandbox.maqet(["stop", "--all", "--force"]).assertExit(0)
        }
    }

    // MARK: Damaged main files

    func testTruncatedZeroedAndRandomMainFilesAreRefusedUnchanged() {
        let whole = FileManager.default.contents(atPath: fixturePath("python-maqet-v1.db"))!
        var generator = SystemRandomNumberGenerator()
        var cases: [(String, Data)] = [
            ("truncated to a page", whole.prefix(4096)),
            ("truncated to 100 bytes", whole.prefix(100)),
            ("zeroed", Data(count: whole.count)),
        ]
        for trial in 0..<Campaign.trials(ci: 3, campaign: 30) {
            cases.append(("random \(trial)", Data((0..<whole.count).map { _ in UInt8.random(in: 0...255, using: &generator) })))
            var header = whole
            let at = Int.random(in: 100..<whole.count, using: &generator)
            header.replaceSubrange(at..<min(whole.count, at + 512), with: (0..<min(512, whole.count - at)).map { _ in UInt8.random(in: 0...255, using: &generator) })
            cases.append(("512 random bytes at \(at)", header))
        }
        for (label, bytes) in cases {
            let sandbox = Sandbox()
            try! FileManager.default.createDirectory(atPath: sandbox.dataDir, withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: sandbox.databasePath, contents: bytes)
            let before = hashes(sandbox.dataDir)
            let result = sandbox.maqet(["ls"])
            if result.code == 0 {
                // A random overwrite inside a page the query never reads may go unnoticed by ls;
                // then db check must find it or the file must still be sound.
                let check = sandbox.maqet(["db", "check"])
                XCTAssertTrue(check.code == 0 || check.code == 1 || check.code == 3, "\(label): \(check.stderr)")
                continue
            }
            XCTAssertTrue([1, 3, 4].contains(result.code), "\(label): exit \(result.code) \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix("maqet: "), "\(label): \(result.stderr)")
            XCTAssertEqual(hashes(sandbox.dataDir)["instances.db"], before["instances.db"], "\(label): a refused file changed")
            if result.code != 4 {
                XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, "\(label): \(result.stderr)")
                XCTAssertEqual(hashes(sandbox.dataDir), before, "\(label): a refused file changed")
            }
        }
    }
}

/// File sizes for the fault tests.
enum SideFilesProbe {
    static func size(_ path: String) -> Int64 {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : 0
    }
}

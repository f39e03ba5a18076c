import CSQLite
import Foundation
import MaqetCore

/// A backup file of the state database.
public struct BackupFile {
    public enum Kind: String { case automatic, manual }
    public var path: String
    public var kind: Kind
    public var size: Int64
    /// When it was taken, from its name (`YYYYMMDD-HHMMSS`, local time).
    public var stamp: String
    /// Collision suffix (`-2`, `-3`, ...), 1 when none; orders backups taken in the same second.
    public var sequence: Int

    /// `instances.db.backup-YYYYMMDD-HHMMSS[-N]` (automatic) or `instances.db.manual-...` (manual).
    static func parse(directory: String, fileName: String) -> BackupFile? {
        let kind: Kind
        let rest: Substring
        if fileName.hasPrefix("instances.db.backup-") {
            kind = .automatic
            rest = fileName.dropFirst("instances.db.backup-".count)
        } else if fileName.hasPrefix("instances.db.manual-") {
            kind = .manual
            rest = fileName.dropFirst("instances.db.manual-".count)
        } else {
            return nil
        }
        let parts = rest.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3,
              parts[0].count == 8, parts[1].count == 6,
              (parts[0] + parts[1]).allSatisfy({ $0.isASCII && $0.isNumber })
        else { return nil }
        var sequence = 1
        if parts.count == 3 {
            guard let n = Int(parts[2]), n >= 2 else { return nil }
            sequence = n
        }
        let path = (directory as NSString).appendingPathComponent(fileName)
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? 0
        return BackupFile(path: path, kind: kind, size: size, stamp: "\(parts[0])-\(parts[1])", sequence: sequence)
    }

    /// "2026-11-25 09:30:00" from the stamp.
    public var time: String {
        let c = Array(stamp)
        guard c.count == 15 else { return stamp }
        return "\(String(c[0..<4]))-\(String(c[4..<6]))-\(String(c[6..<8])) \(String(c[9..<11])):\(String(c[11..<13])):\(String(c[13..<15]))"
    }
}

/// Taking, verifying, listing and pruning backups. Every copy goes through SQLite's online backup
/// API, so it is a consistent snapshot even while other processes use the database.
public enum Backups {
    /// Backups in the data directory, oldest first.
    public static func list(in directory: String) -> [BackupFile] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { BackupFile.parse(directory: directory, fileName: $0) }
            .sorted { ($0.stamp, $0.sequence, $0.kind.rawValue) < ($1.stamp, $1.sequence, $1.kind.rawValue) }
    }

    /// Deletes the oldest automatic backups beyond `keep`; manual ones are never touched.
    /// Returns the deleted paths.
    @discardableResult
    public static func prune(in directory: String, keep: Int) -> [String] {
        let automatic = list(in: directory).filter { $0.kind == .automatic }
        guard keep >= 0, automatic.count > keep else { return [] }
        var deleted: [String] = []
        for backup in automatic.prefix(automatic.count - keep) {
            if (try? FileManager.default.removeItem(atPath: backup.path)) != nil { deleted.append(backup.path) }
        }
        return deleted
    }

    /// Links `source` to `base`, or `base-2`, `base-3`, ... when taken; never overwrites a file
    /// (unlike rename). Returns the name used.
    static func linkUnique(_ source: String, base: String, what: String) throws -> String {
        var candidate = base
        var n = 2
        while link(source, candidate) != 0 {
            guard errno == EEXIST, n < 1000 else {
                throw MaqetError("cannot \(what) \(candidate): \(String(cString: strerror(errno)))")
            }
            candidate = "\(base)-\(n)"
            n += 1
        }
        return candidate
    }

    static func stamp(_ date: Date = Date()) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        localtime_r(&t, &parts)
        return String(format: "%04d%02d%02d-%02d%02d%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    /// Refuses when the file system holding `directory` has less than twice the database (plus the
    /// WAL) and a 4 MiB margin free: room for the backup and for the migration's rewrite.
    static func checkFreeSpace(directory: String, databasePath: String, purpose: String = "back up and migrate the database") throws {
        var info = statvfs()
        guard statvfs(directory, &info) == 0 else { return } // cannot tell: let SQLite report a full disk
        let available = Int64(info.f_bavail) * Int64(info.f_frsize)
        let size = fileSize(databasePath) + fileSize(databasePath + "-wal")
        let needed = size * 2 + 4 * 1024 * 1024
        if let forced = ProcessInfo.processInfo.environment["MAQET_TEST_FREE_BYTES"], let value = Int64(forced) {
            if value < needed { throw spaceError(directory, purpose, needed: needed, available: value) }
            return
        }
        if available < needed { throw spaceError(directory, purpose, needed: needed, available: available) }
    }

    private static func spaceError(_ directory: String, _ purpose: String, needed: Int64, available: Int64) -> MaqetError {
        MaqetError("not enough free space in \(directory) to \(purpose): need \(formatSize(needed)), \(formatSize(available)) available; free some space and run the command again (nothing was changed)")
    }

    static func fileSize(_ path: String) -> Int64 {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : 0
    }

    public static func formatSize(_ bytes: Int64) -> String {
        if bytes < 1024 { return "\(bytes) B" }
        let units = ["KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes) / 1024
        var unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return String(format: "%.1f %@", value, units[unit])
    }

    /// Row count of every table, to compare a copy with its source.
    static func rowCounts(_ database: Database) throws -> [String: Int64] {
        var counts: [String: Int64] = [:]
        for table in try database.tableNames() {
            counts[table] = try database.scalar("SELECT count(*) FROM \(sqlIdentifier(table))")?.integerValue ?? 0
        }
        return counts
    }

    /// Copies `source` (which may be inside a transaction: the copy is what that connection sees) to
    /// a new file beside the database: `instances.db.<kind>-YYYYMMDD-HHMMSS` (`-2`, `-3`... when taken),
    /// or to `path`. Writes a temporary file, fsyncs it, links it into place without overwriting,
    /// fsyncs the directory, then verifies the result against the source. Returns its path.
    /// `source` must not hold a write transaction (use a second connection); it is read in one read
    /// transaction so the counts and the copy are the same snapshot.
    public static func create(from source: Database, directory: String, kind: BackupFile.Kind, path explicitPath: String? = nil) throws -> String {
        let ownTransaction = !source.inTransaction
        if ownTransaction { try source.execute("BEGIN") }
        defer { if ownTransaction, source.inTransaction { try? source.execute("COMMIT") } }
        let expectedVersion = try SchemaVersion.read(source)
        let expectedCounts = try rowCounts(source)
        removeStaleTemporaries(in: directory)
        let targetDirectory = explicitPath.map { ($0 as NSString).deletingLastPathComponent } ?? directory
        let temporary = (targetDirectory.isEmpty ? "." : targetDirectory as NSString).appendingPathComponent(".maqet-backup-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).tmp")
        defer { unlink(temporary); unlink(temporary + "-journal") }
        do {
            try StateFiles.createPrivateFile(temporary) // a backup holds what the database holds: 0600
            let destination = try Database(path: temporary, mode: .readWrite)
            try source.copyContents(into: destination)
            // A backup is one self-contained file, whatever mode the live database uses.
            _ = try destination.query("PRAGMA journal_mode = DELETE")
            destination.close()
        } catch let error as SQLiteError {
            if StateFiles.environmentFault(error, path: temporary) != nil {
                throw MaqetError("cannot write a backup in \(targetDirectory.isEmpty ? "." : targetDirectory) (\(error.message)): \(StateFiles.accessOrSpace(temporary)); no backup was kept and the database is unchanged")
            }
            throw MaqetError("cannot write backup \(temporary): \(error.description)")
        }
        try fsyncPath(temporary)
        let final: String
        if let explicitPath {
            guard link(temporary, explicitPath) == 0 else {
                let reason = String(cString: strerror(errno))
                throw MaqetError("cannot create backup \(explicitPath): \(reason)\(errno == EEXIST ? " (choose another name; maqet never overwrites a file)" : "")")
            }
            final = explicitPath
        } else {
            let base = (directory as NSString).appendingPathComponent("instances.db.\(kind == .automatic ? "backup" : "manual")-\(stamp())")
            final = try linkUnique(temporary, base: base, what: "create backup")
        }
        try fsyncPath(targetDirectory.isEmpty ? "." : targetDirectory)
        do {
            try verify(path: final, expectedVersion: expectedVersion.version, expectedCounts: expectedCounts)
        } catch {
            unlink(final)
            throw error
        }
        return final
    }

    /// Opens a backup and checks it: integrity_check is "ok", the schema version and the row count
    /// of every table are what the source had.
    static func verify(path: String, expectedVersion: Int, expectedCounts: [String: Int64]) throws {
        do {
            let copy = try Database(path: path, mode: .readWrite)
            defer { copy.close() }
            let check = try copy.integrityCheck()
            guard check == ["ok"] else {
                throw MaqetError("backup \(path) failed its integrity check: \(StateFiles.oneLine(check))")
            }
            let version = try SchemaVersion.read(copy)
            guard version.version == expectedVersion else {
                throw MaqetError("backup \(path) has schema version \(version.version), the database has \(expectedVersion)")
            }
            let counts = try rowCounts(copy)
            guard counts == expectedCounts else {
                throw MaqetError("backup \(path) does not hold the same rows as the database (tables and counts differ)")
            }
        } catch let error as SQLiteError {
            throw MaqetError("backup \(path) cannot be verified: \(error.description)")
        }
    }

    /// Opens `path` read-only and checks it is a sound maqet database; returns its version.
    public static func inspect(path: String) throws -> SchemaVersion {
        do {
            let copy = try Database(path: path, mode: .readOnly)
            defer { copy.close() }
            let check = try copy.integrityCheck()
            guard check == ["ok"] else {
                throw MaqetError("\(path) failed its integrity check: \(StateFiles.oneLine(check))", status: .databaseRefused)
            }
            return try SchemaVersion.read(copy)
        } catch let error as SQLiteError {
            throw MaqetError("\(path) is not a usable SQLite database: \(error.message)", status: .databaseRefused)
        }
    }

    /// Deletes `.maqet-backup-PID-N.tmp` files left by a maqet process that was killed mid-backup
    /// (its PID no longer exists).
    static func removeStaleTemporaries(in directory: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasPrefix(".maqet-backup-") {
            let parts = name.split(separator: "-")
            guard parts.count >= 4, let pid = Int32(parts[2]), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            unlink((directory as NSString).appendingPathComponent(name))
        }
    }

    static func fsyncPath(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw MaqetError("cannot open \(path) to sync it: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var rc: Int32
        repeat { rc = fsync(fd) } while rc != 0 && errno == EINTR
        if rc != 0 { throw MaqetError("cannot sync \(path): \(String(cString: strerror(errno)))") }
    }
}

import CSQLite
import Foundation
import MaqetCore

/// The side files SQLite replays into a database when it opens it: a `-wal` that no open
/// connection uses, and a hot `-journal`. Replaying one that belongs to another database rewrites
/// `instances.db` before maqet has looked at it, so maqet first replays a copy in a private
/// temporary directory and only lets SQLite recover the real files when the result is a database
/// it accepts. A database it refuses is left exactly as it was, side files included.
enum SideFiles {
    /// Refuses (exit 3, nothing changed) when SQLite would recover side files into `path` and the
    /// result would not be a sound maqet database at a version up to `latest`. Costs two `stat`s
    /// when there are no side files to recover.
    static func check(_ path: String, latest: () -> Int) throws {
        for _ in 0..<3 {
            let pending = recoverable(path)
            if pending.isEmpty { return }
            let before = fingerprint(path, pending)
            guard let problem = problemAfterRecovery(path, pending, latest: latest()) else { return }
            // Another process may have recovered them meanwhile (our copy then mixed two states):
            // only a verdict on files that stayed the same counts.
            if fingerprint(path, recoverable(path)) == before {
                throw refusal(path, pending, problem)
            }
        }
    }

    /// The side files of `path` that the next connection would replay.
    static func recoverable(_ path: String) -> [String] {
        var found: [String] = []
        let wal = path + "-wal"
        if size(wal) > 0 && !lockHeld(path + "-shm", offset: 128) { // SQLite's "DMS" byte of the -shm
            found.append(wal)
        }
        let journal = path + "-journal"
        if size(journal) > 0, firstByte(journal) != 0, !lockHeld(path, offset: 0x4000_0001) { // the RESERVED byte
            found.append(journal)
        }
        return found
    }

    /// True when another process holds a lock on `offset` of `path` (an open SQLite connection
    /// does). The corresponding C function is `fcntl(F_GETLK)`.
    static func lockHeld(_ path: String, offset: off_t) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var lock = flock()
        lock.l_type = Int16(F_WRLCK)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = offset
        lock.l_len = 1
        guard fcntl(fd, F_GETLK, &lock) == 0 else { return false }
        return lock.l_type != Int16(F_UNLCK)
    }

    /// What would be wrong with `path` once `sideFiles` were replayed into it, or nil when the
    /// result is a sound maqet database. Works on copies; the real files are only read.
    static func problemAfterRecovery(_ path: String, _ sideFiles: [String], latest: Int) -> String? {
        let main = bytes(path, count: 100)
        if !main.isEmpty && (main.count < 100 || !main.starts(with: Array("SQLite format 3\0".utf8))) {
            return "\(path) itself is not an SQLite database"
        }
        if main.count == 100 {
            let pageSize = Int(main[16]) << 8 | Int(main[17])
            let databasePageSize = pageSize == 1 ? 65536 : pageSize
            for side in sideFiles {
                // Only a well-formed header is replayed: SQLite ignores one without its magic.
                let header = bytes(side, count: 28)
                let isWAL = side.hasSuffix("-wal")
                let magic: [[UInt8]] = isWAL ? [[0x37, 0x7F, 0x06, 0x82], [0x37, 0x7F, 0x06, 0x83]]
                    : [[0xD9, 0xD5, 0x05, 0xF9, 0x20, 0xA1, 0x63, 0xD7]]
                guard header.count == 28, magic.contains(where: { header.starts(with: $0) }) else { continue }
                let offset = isWAL ? 8 : 24
                let sidePageSize = header[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
                let valid = sidePageSize >= 512 && sidePageSize <= 65536 && sidePageSize & (sidePageSize - 1) == 0
                if valid && sidePageSize != databasePageSize {
                    return "\((side as NSString).lastPathComponent) has pages of \(sidePageSize) bytes, the database \(databasePageSize)"
                }
            }
        }
        // A private (0700) scratch directory: the temporary directory, else beside the database.
        var scratch: String?
        var reason = ""
        for base in [NSTemporaryDirectory(), (path as NSString).deletingLastPathComponent] where scratch == nil {
            var template = Array(((base as NSString).appendingPathComponent(".maqet-inspect.XXXXXX")).utf8CString)
            if let made = mkdtemp(&template) { scratch = String(cString: made) } else { reason = String(cString: strerror(errno)) }
        }
        guard let scratch else { return "maqet could not make a private copy to inspect them (\(reason))" }
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let copy = (scratch as NSString).appendingPathComponent("instances.db")
        do {
            try FileManager.default.copyItem(atPath: path, toPath: copy)
            for side in sideFiles {
                try FileManager.default.copyItem(atPath: side, toPath: copy + (side.hasSuffix("-wal") ? "-wal" : "-journal"))
            }
        } catch {
            return "maqet could not make a private copy to inspect them (\(error.localizedDescription))"
        }
        do {
            let database = try Database(path: copy, mode: .readWrite)
            defer { database.close() }
            _ = try database.scalar("SELECT count(*) FROM sqlite_master")
            let check = try database.integrityCheck(quick: true)
            guard check == ["ok"] else { return "the result would be damaged (\(StateFiles.oneLine(check)))" }
            let version = try SchemaVersion.read(database)
            if version.version > latest {
                return "the result would be at schema version \(version.version), newer than this maqet knows (latest \(latest))"
            }
            return nil
        } catch let error as SQLiteError {
            return "the result would not be a usable database (\(error.message))"
        } catch let error as MaqetError {
            return "the result would not be maqet's: " + error.message.replacingOccurrences(of: copy, with: "it").replacingOccurrences(of: "; refusing to touch it", with: "")
        } catch {
            return "the result cannot be read (\(error))"
        }
    }

    static func refusal(_ path: String, _ sideFiles: [String], _ problem: String) -> MaqetError {
        let names = sideFiles.map { ($0 as NSString).lastPathComponent }.joined(separator: " and ")
        let directory = (path as NSString).deletingLastPathComponent
        return MaqetError("""
            \(path) has side files that do not belong to it (\(names)): SQLite would replay them into the database, and \
            \(problem); refusing to open it, and every file was left as it was. If no maqet process is running, move \
            \(names) out of \(directory) and run the command again (or restore a backup: maqet db backups, then maqet db restore BACKUP)
            """, status: .databaseRefused)
    }

    /// Size and modification time of each file, to tell whether they changed.
    static func fingerprint(_ path: String, _ sideFiles: [String]) -> [String] {
        ([path] + sideFiles).map { file in
            var info = stat()
            guard stat(file, &info) == 0 else { return "\(file):missing" }
            return "\(file):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec):\(info.st_ino)"
        }
    }

    static func size(_ path: String) -> Int64 {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return 0 }
        return Int64(info.st_size)
    }

    static func firstByte(_ path: String) -> UInt8? { bytes(path, count: 1).first }

    static func bytes(_ path: String, count: Int) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: count)
        let n = buffer.withUnsafeMutableBytes { raw in pread(fd, raw.baseAddress, count, 0) }
        return n > 0 ? Array(buffer[0..<n]) : []
    }
}

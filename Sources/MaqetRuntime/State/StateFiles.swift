import CSQLite
import Foundation
import MaqetCore

/// Who may read the state files, and what to say when maqet may not use them. The one owner of
/// the modes: the data directory is 0700 and every file maqet keeps in it (`instances.db`, its
/// `-wal`/`-shm`/`-journal`, backups, logs) is 0600.
enum StateFiles {
    static let fileMode: mode_t = 0o600
    static let directoryMode: mode_t = 0o700

    /// Creates `path` empty with mode 0600 when it is missing, before SQLite opens it: SQLite
    /// gives the `-wal`, `-shm` and `-journal` files the mode of the database file, so they are
    /// private from their first byte. An existing file is left alone (`O_EXCL`).
    /// The corresponding C function is `open(O_CREAT | O_EXCL)`.
    static func createPrivateFile(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, fileMode)
        if fd >= 0 {
            fchmod(fd, fileMode) // the umask may have removed our own write bit
            close(fd)
            return
        }
        let code = errno
        if code == EEXIST { return }
        throw MaqetError(accessProblem(path, creating: true, errno: code))
    }

    /// Removes the group and other bits of `path` (a regular file or directory, not a symlink)
    /// when maqet's user owns it. Returns true when it changed the mode.
    @discardableResult
    static func tighten(_ path: String) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_uid == geteuid(), info.st_mode & 0o077 != 0 else { return false }
        let type = info.st_mode & S_IFMT
        guard type == S_IFREG || type == S_IFDIR else { return false }
        return chmod(path, info.st_mode & 0o700) == 0
    }

    /// A data directory or database that others can read (made by an older maqet or the Python
    /// maqet, or by hand) is tightened: the directory to 0700, and every file maqet keeps in it
    /// to 0600. Two `stat`s when nothing is loose; only files maqet's user owns are changed.
    static func tightenExisting(_ configuration: StateConfiguration) {
        let directory = configuration.dataDirectory
        var dirInfo = stat(), dbInfo = stat()
        let dirLoose = stat(directory, &dirInfo) == 0 && dirInfo.st_mode & 0o077 != 0
        let dbLoose = stat(configuration.databasePath, &dbInfo) == 0 && dbInfo.st_mode & 0o077 != 0
        guard dirLoose || dbLoose else { return }
        tighten(directory)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where isStateFile(name) {
            tighten((directory as NSString).appendingPathComponent(name))
        }
        let logs = (directory as NSString).appendingPathComponent("logs")
        if tighten(logs) || dirLoose {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: logs)) ?? [] {
                tighten((logs as NSString).appendingPathComponent(name))
            }
        }
    }

    /// `instances.db`, its side files, backups and the damaged copies `db restore` moved aside.
    static func isStateFile(_ name: String) -> Bool {
        name == "instances.db" || name.hasPrefix("instances.db-") || name.hasPrefix("instances.db.")
    }

    // MARK: Messages

    /// Why `path` cannot be opened (or created) for writing, with owner, mode and what to do.
    /// Used when SQLite says only "unable to open database file" or opens the file read-only.
    static func accessProblem(_ path: String, creating: Bool = false, errno code: Int32? = nil) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        var fs = statvfs()
        if statvfs(directory, &fs) == 0, fs.f_flag & UInt(ST_RDONLY) != 0 {
            return "cannot write \(path): the file system holding \(directory) is mounted read-only; remount it read-write, or use a data directory elsewhere (--maqet-data-dir DIR); nothing was changed"
        }
        let user = describeUser(geteuid())
        var parts: [String] = []
        var dirInfo = stat()
        if stat(directory, &dirInfo) == 0 {
            parts.append("directory \(directory) is owned by \(describeUser(dirInfo.st_uid)), mode \(octal(dirInfo.st_mode))")
        }
        var fileInfo = stat()
        let exists = stat(path, &fileInfo) == 0
        if exists {
            parts.append("\(path) is owned by \(describeUser(fileInfo.st_uid)), mode \(octal(fileInfo.st_mode))")
        }
        let foreign = (exists && fileInfo.st_uid != geteuid()) || dirInfo.st_uid != geteuid()
        let reason = code.map { String(cString: strerror($0)) } ?? "permission denied"
        let fix = foreign
            ? "run maqet as the user who owns them, or make them yours: chown -R \(userName(geteuid()) ?? String(geteuid())) \(directory)"
            : "give yourself access again: chmod 700 \(directory) && chmod 600 \(path)*"
        return "cannot \(creating ? "create" : "open") \(path) for reading and writing (\(reason)): \(parts.joined(separator: "; ")); maqet runs as \(user). To fix: \(fix); nothing was changed"
    }

    /// The message for "the disk is full" while writing `path`.
    static func diskFull(_ path: String, _ error: SQLiteError) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        return "the file system holding \(directory) is full (\(error.message)); the change was not written and \(path) is as it was. Free some space there and run the command again"
    }

    /// The clear message for an SQLite failure caused by the machine rather than the SQL: the
    /// disk is full, the file may not be written, or an I/O error on a full file system. nil for
    /// every other failure.
    static func environmentFault(_ error: SQLiteError, path: String) -> String? {
        switch error.primaryCode {
        case SQLITE_FULL:
            return diskFull(path, error)
        case SQLITE_IOERR where (freeBytes((path as NSString).deletingLastPathComponent) ?? Int64.max) < 1 << 20:
            return diskFull(path, error)
        case SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_PERM:
            return accessProblem(path)
        default:
            return nil
        }
    }

    /// For a failed write of `path`: "the file system … is full; free some space" or what
    /// `accessProblem` says.
    static func accessOrSpace(_ path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        if let free = freeBytes(directory), free < 1 << 20 {
            return "the file system holding \(directory) is full (\(Backups.formatSize(free)) free); free some space there and run the command again"
        }
        return accessProblem(path)
    }

    /// Bytes an unprivileged process may still write on the file system holding `directory`
    /// (nil when it cannot tell).
    static func freeBytes(_ directory: String) -> Int64? {
        var info = statvfs()
        guard statvfs(directory.isEmpty ? "." : directory, &info) == 0 else { return nil }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }

    /// The first lines of an integrity_check report as one line (SQLite's lines may hold newlines).
    static func oneLine(_ report: [String]) -> String {
        report.prefix(3).joined(separator: "; ").split(whereSeparator: \.isNewline).joined(separator: " ")
    }

    static func octal(_ mode: mode_t) -> String { "0" + String(mode & 0o7777, radix: 8) }

    static func userName(_ uid: uid_t) -> String? {
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return nil }
        return String(cString: name)
    }

    static func describeUser(_ uid: uid_t) -> String {
        userName(uid).map { "\($0) (uid \(uid))" } ?? "uid \(uid)"
    }
}

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Append-only private log files (mode 0600 in a 0700 folder): the mechanism under a VM's history
/// and events logs. What a line says is the caller's business (MaqetRuntime's `History`).
public enum LogFile {
    /// Appends `bytes` to `path` with one `write` on an `O_APPEND` descriptor, so lines from
    /// several processes never interleave; creates the file (0600) and its folder (0700) when
    /// missing. Returns false when the file cannot be opened or written.
    @discardableResult
    public static func append(_ path: String, _ bytes: [UInt8]) -> Bool {
        var fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        if fd < 0 && errno == ENOENT {
            _ = mkdir((path as NSString).deletingLastPathComponent, 0o700)
            fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        }
        guard fd >= 0 else { return false }
        defer { _ = Glibc.close(fd) }
        let n = bytes.withUnsafeBytes { raw in retryingEINTR { Glibc.write(fd, raw.baseAddress, raw.count) } }
        return n == bytes.count
    }

    /// What `rotate` did.
    public enum Rotation: Equatable {
        /// The file was over the cap and is now `path.1`.
        case rotated
        /// Nothing to do: missing, not a regular file, or not over the cap.
        case kept
        /// Over the cap, but the rename failed (the errno).
        case failed(Int32)
    }

    /// When `path` is larger than `maxBytes`, renames it to `path.1` (replacing an older `.1`), so
    /// the next append (ours, or QEMU's for the console log) starts a new file. The one rotation
    /// of maqet's logs: every caller passes its own cap.
    @discardableResult
    public static func rotate(_ path: String, maxBytes: Int64) -> Rotation {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, Int64(info.st_size) > maxBytes else { return .kept }
        return rename(path, path + ".1") == 0 ? .rotated : .failed(errno)
    }
}

/// "2026-11-25T09:12:03.456Z": UTC with milliseconds, the one timestamp format of maqet's logs.
/// `gmtime_r` + `strftime`: no ICU to load in the runner.
public func utcTimestamp() -> String {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var seconds = now.tv_sec
    var parts = tm()
    gmtime_r(&seconds, &parts)
    var buffer = [CChar](repeating: 0, count: 32)
    let n = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S", &parts)
    let millis = String(Int(now.tv_nsec / 1_000_000))
    return String(cString: Array(buffer[0..<n]) + [0]) + "." + String(repeating: "0", count: 3 - millis.count) + millis + "Z"
}

#if canImport(Glibc)
import Glibc
#endif

/// The address of a Unix stream socket (`struct sockaddr_un`) for `connect`: the one place that
/// knows how long its path may be and how the structure is filled in.
public struct UnixSocketAddress {
    /// The longest path `sockaddr_un.sun_path` holds without its terminating NUL: 107 on Linux.
    public static let maximumPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    private var storage = sockaddr_un()
    private let length: socklen_t

    /// Fails with `EINVAL` for an empty path or one holding a NUL byte, `ENAMETOOLONG` for one
    /// longer than `maximumPathLength`.
    public init(path: String) throws {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, !bytes.contains(0) else { throw SystemError(errno: EINVAL, "socket path '\(path)'") }
        guard bytes.count <= Self.maximumPathLength else { throw SystemError(errno: ENAMETOOLONG, "socket path \(path)") }
        storage.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &storage.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
    }

    /// `connect(fd, address)`, retried on EINTR; 0 or -1 with `errno` set, as the C function.
    public func connect(_ fd: Int32) -> Int32 {
        var address = storage
        return retryingEINTR {
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
            }
        }
    }
}

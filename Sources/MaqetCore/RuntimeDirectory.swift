import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where running VMs keep their sockets and runtime files: `$MAQET_RUNTIME_DIR` as it is (set by
/// `--maqet-runtime-dir` or maqet.conf's `directories.runtime_dir`, and inherited by the VM's
/// runner), else `$XDG_RUNTIME_DIR/maqet`, else `/tmp/maqet-<uid>`; mode 0700, owned by the user. Each VM gets a short subdirectory named after
/// the first 12 characters of its id (socket paths must fit in 107 bytes). Which files a VM's
/// directory holds (its monitors, console socket, logs, spec) is named in one place, `qemu.paths`
/// in scripts/lib/qemu.lua; see docs/architecture.md.
public enum RuntimeDirectory {
    /// The runtime directory's path for this user (not created).
    public static func path(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let own = environment[overrideVariable], !own.isEmpty { return own }
        if let xdg = environment["XDG_RUNTIME_DIR"], !xdg.isEmpty {
            return (xdg as NSString).appendingPathComponent("maqet")
        }
        return "/tmp/maqet-\(getuid())"
    }

    /// The variable that names the runtime directory itself (`--maqet-runtime-dir`).
    public static let overrideVariable = "MAQET_RUNTIME_DIR"

    /// Creates the runtime directory (0700) when missing and checks an existing one; returns its path.
    public static func ensure(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        let root = path(environment: environment)
        if let own = environment[overrideVariable], !own.isEmpty {
            // Its parent may be missing too (`--maqet-runtime-dir /tmp/a/b`): created 0700.
            try makePrivateDirectory(own, intermediate: true)
            return own
        }
        if let xdg = environment["XDG_RUNTIME_DIR"], !xdg.isEmpty {
            // $XDG_RUNTIME_DIR normally exists (systemd creates it); create it 0700 when it does not.
            if access(xdg, F_OK) != 0 { try makePrivateDirectory(xdg, intermediate: true) }
        }
        try makePrivateDirectory(root)
        return root
    }

    /// The per-VM directory for `vmID` (created 0700), inside the runtime directory.
    public static func ensureVMDirectory(vmID: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        let name = String(vmID.prefix(12))
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
            throw SystemError(errno: EINVAL, "runtime directory for VM id '\(vmID)'")
        }
        let directory = (try ensure(environment: environment) as NSString).appendingPathComponent(name)
        try checkSocketPath((directory as NSString).appendingPathComponent("runner.qmp"), environment: environment)
        try makePrivateDirectory(directory)
        return directory
    }

    /// Creates `path` with mode 0700 unless it exists; an existing one must be a real directory
    /// (not a symlink) owned by this user — its mode is then set to 0700. Anything else is refused.
    public static func makePrivateDirectory(_ path: String, intermediate: Bool = false) throws {
        if intermediate {
            let parent = (path as NSString).deletingLastPathComponent
            if !parent.isEmpty, parent != path, access(parent, F_OK) != 0 {
                try makePrivateDirectory(parent, intermediate: true)
            }
        }
        if mkdir(path, 0o700) == 0 {
            _ = chmod(path, 0o700) // the umask may have removed bits; never more than 0700 anyway
            return
        }
        let e = errno
        guard e == EEXIST else { throw SystemError(errno: e, "cannot create the runtime directory \(path)") }
        var info = stat()
        guard lstat(path, &info) == 0 else { throw SystemError(errno: errno, "cannot use the runtime directory \(path)") }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw SystemError(errno: ENOTDIR, "refusing the runtime directory \(path): it is not a directory (a symlink or file is in the way; remove it)")
        }
        guard info.st_uid == getuid() else {
            throw SystemError(errno: EPERM, "refusing the runtime directory \(path): it belongs to uid \(info.st_uid), not to you (uid \(getuid())); remove it or set XDG_RUNTIME_DIR")
        }
        if (info.st_mode & 0o777) != 0o700 {
            guard chmod(path, 0o700) == 0 else { throw SystemError(errno: errno, "cannot make the runtime directory \(path) private (chmod 0700)") }
        }
    }

    /// Throws ENAMETOOLONG with a clear message when `path` cannot be a Unix socket address.
    public static func checkSocketPath(_ path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let length = path.utf8.count
        guard length <= UnixSocketAddress.maximumPathLength else {
            var error = SystemError(errno: ENAMETOOLONG, "")
            let remedy = (environment[overrideVariable] ?? "").isEmpty
                ? "use a shorter XDG_RUNTIME_DIR" : "give a shorter --maqet-runtime-dir (or $MAQET_RUNTIME_DIR, maqet.conf's directories.runtime_dir)"
            error.message = "socket path \(path) is \(length) bytes, longer than the \(UnixSocketAddress.maximumPathLength) a Unix socket allows; \(remedy)"
            throw error
        }
    }

    /// Removes a VM's runtime directory: every file in it (sockets, logs, the spec, locks; the
    /// directory belongs to that one VM, and which files it holds is named by the Lua workflows'
    /// `qemu.paths`, not here), `extraFiles` named by the spec outside it, and the directory itself.
    /// Subdirectories are left, and so then is the directory.
    public static func removeVMDirectory(_ directory: String, extraFiles: [String] = []) {
        if let names = try? FileManager.default.contentsOfDirectory(atPath: directory) {
            for name in names { _ = unlink((directory as NSString).appendingPathComponent(name)) }
        }
        for file in extraFiles { _ = unlink(file) }
        _ = rmdir(directory)
    }
}

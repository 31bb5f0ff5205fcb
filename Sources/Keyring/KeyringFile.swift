import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// Reads and writes a keyring as JSON (`{"primary": KEY, "keys": [KEY, ...]}`), mode 0600.
///
/// Writes go to a temporary file that is fsync'd and renamed over the old one, so a crash leaves
/// either the old or the new keyring, never a torn one.
public enum KeyringFile {
    struct Contents: Codable {
        var primary: String
        var keys: [String]
    }

    public static func load(path: String) throws(KeyringError) -> Keyring {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KeyringError(.unreadableFile, "cannot read keyring file \(path): \(unreadable(path))")
        }
        let contents: Contents
        do {
            contents = try JSONDecoder().decode(Contents.self, from: data)
        } catch {
            // Older or hand-written files may be a plain array with the primary key first.
            if let list = try? JSONDecoder().decode([String].self, from: data), let first = list.first {
                contents = Contents(primary: first, keys: list)
            } else {
                throw KeyringError(.unreadableFile, "keyring file \(path) is not a JSON keyring ({\"primary\": KEY, \"keys\": [...]})")
            }
        }
        let primary: SecretKey
        do {
            primary = try SecretKey(base64: contents.primary)
        } catch {
            throw KeyringError(.unreadableFile, "keyring file \(path): primary key: \(error.message)")
        }
        var ring = Keyring(primary: primary)
        for (i, k) in contents.keys.enumerated() {
            do {
                try ring.install(try SecretKey(base64: k))
            } catch {
                throw KeyringError(.unreadableFile, "keyring file \(path): keys[\(i)]: \(error.message)")
            }
        }
        return ring
    }

    public static func save(_ ring: Keyring, path: String) throws(KeyringError) {
        guard let primary = ring.primary else {
            throw KeyringError(.noKeys, "refusing to write an empty keyring to \(path)")
        }
        let contents = Contents(primary: primary.base64, keys: ring.keys.map(\.base64))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            let data = try encoder.encode(contents)
            try AtomicFile.write(data, to: path, mode: 0o600)
        } catch {
            throw KeyringError(.unreadableFile, "cannot write keyring file \(path): \(reason(error))")
        }
    }

    static func reason(_ error: any Error) -> String {
        if let e = error as? AtomicFile.Failure { return e.message }
        return "\(error)"
    }

    /// Why a file cannot be read, in the words of the C library.
    static func unreadable(_ path: String) -> String {
        if access(path, R_OK) != 0 { return String(cString: strerror(errno)).lowercased() }
        return "unreadable"
    }
}

/// Crash-safe whole-file replacement: write a temporary file, fsync it, rename, fsync the folder.
public enum AtomicFile {
    public struct Failure: Error, Sendable { public let message: String }

    public static func write(_ data: Data, to path: String, mode: mode_t = 0o644) throws {
        let tmp = path + ".tmp.\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw Failure(message: "\(tmp): \(String(cString: strerror(errno)))") }
        var ok = true
        data.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + off, raw.count - off)
                if n <= 0 { if errno == EINTR { continue }; ok = false; break }
                off += n
            }
        }
        let err = errno
        if ok && fsync(fd) != 0 { ok = false }
        close(fd)
        guard ok else {
            unlink(tmp)
            throw Failure(message: "\(tmp): \(String(cString: strerror(err)))")
        }
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw Failure(message: "\(path): \(String(cString: strerror(e)))")
        }
        let dir = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let dfd = open(dir.isEmpty ? (path.hasPrefix("/") ? "/" : ".") : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}

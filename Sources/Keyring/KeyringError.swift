/// An error from key handling, with a stable code and a message for people.
public struct KeyringError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable {
        case invalidKey = "invalid_key"
        case keyNotInstalled = "key_not_installed"
        case removingPrimary = "removing_primary_key"
        case keyIDCollision = "key_id_collision"
        case unreadableFile = "unreadable_keyring_file"
        case noKeys = "no_keys"
    }
    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// Why a frame could not be opened; the shell counts these and drops the frame.
public enum OpenFailure: String, Error, Sendable, CaseIterable {
    case truncated
    case badMagic = "bad_magic"
    case unsupportedVersion = "unsupported_version"
    case plaintextRefused = "plaintext_refused"
    case sealedButNoKeys = "sealed_without_keys"
    case unknownKey = "unknown_key"
    case forged
}

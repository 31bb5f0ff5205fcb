import ArgumentParser
import Keyring

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen", abstract: "Print a new random 32-byte cluster key, base64-encoded.")

    func run() {
        print(SecretKey.generate().base64)
    }
}

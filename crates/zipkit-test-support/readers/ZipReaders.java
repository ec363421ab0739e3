// The JDK's two ZIP readers on one archive: `stream` walks local headers with ZipInputStream
// (what JVM and Android services use on a download), `file` reads the central directory with
// ZipFile. Prints one line per entry: name, size, CRC-32 (hex) of the bytes read; both readers
// check each entry's CRC-32 themselves and fail on a mismatch.
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.Enumeration;
import java.util.zip.*;

public class ZipReaders {
    public static void main(String[] args) throws IOException {
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
        byte[] buffer = new byte[1 << 16];
        if (args[0].equals("stream")) {
            try (ZipInputStream in = new ZipInputStream(new BufferedInputStream(new FileInputStream(args[1])))) {
                ZipEntry entry;
                while ((entry = in.getNextEntry()) != null) {
                    print(out, entry.getName(), in, buffer);
                }
            }
        } else {
            try (ZipFile zip = new ZipFile(args[1])) {
                Enumeration<? extends ZipEntry> entries = zip.entries();
                while (entries.hasMoreElements()) {
                    ZipEntry entry = entries.nextElement();
                    try (InputStream in = zip.getInputStream(entry)) {
                        long[] read = print(out, entry.getName(), in, buffer);
                        if (read[0] != entry.getSize() || read[1] != entry.getCrc()) {
                            throw new ZipException(entry.getName() + ": the directory says " + entry.getSize() + " bytes, CRC " + Long.toHexString(entry.getCrc()));
                        }
                    }
                }
            }
        }
    }

    static long[] print(PrintStream out, String name, InputStream in, byte[] buffer) throws IOException {
        CRC32 crc = new CRC32();
        long size = 0;
        int n;
        while ((n = in.read(buffer)) > 0) {
            crc.update(buffer, 0, n);
            size += n;
        }
        out.println(name + "\t" + size + "\t" + Long.toHexString(crc.getValue()));
        return new long[] {size, crc.getValue()};
    }
}

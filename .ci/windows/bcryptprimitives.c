/* Stand-in for Windows 10's bcryptprimitives.dll, which Wine 8 does not ship.
   Rust's std (since 1.78) imports ProcessPrng from it (HashMap keys and the like).
   Backed by RtlGenRandom (advapi32!SystemFunction036). Test prefixes only: never shipped. */
#include <windows.h>
#include <ntsecapi.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, chunk)) return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}

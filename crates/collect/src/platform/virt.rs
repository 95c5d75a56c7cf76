//! Which hypervisor a host runs under, in systemd-detect-virt's vocabulary: the pure decision
//! and the CPUID probe, shared by the Linux and Windows `system` collectors.

/// What the hypervisor check looks at, gathered up front so the decision is a pure function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtInputs {
    /// `/sys/class/dmi/id/{product_name,sys_vendor,board_vendor,bios_vendor,product_version}`,
    /// in that order (systemd's, so QEMU-with-KVM reads as KVM).
    pub dmi: [Option<String>; 5],
    /// `/sys/hypervisor/type`.
    pub hypervisor_type: Option<String>,
    /// `/proc/xen/capabilities`, which says `control_d` in dom0.
    pub xen_capabilities: Option<String>,
    /// `/proc/device-tree/hypervisor/compatible` (ARM and other device-tree platforms).
    pub device_tree_hypervisor: Option<String>,
    /// Whether `/proc/cpuinfo` has the `hypervisor` flag.
    pub cpu_hypervisor_flag: bool,
    /// The hypervisor's CPUID vendor signature (leaf `0x4000_0000`), e.g. `KVMKVMKVM`; x86
    /// only, and only when CPUID leaf 1 says a hypervisor is present.
    pub cpuid_vendor: Option<String>,
}

/// CPUID hypervisor signatures and the systemd-detect-virt name each means.
const CPUID_VENDORS: [(&str, &str); 9] = [
    ("KVMKVMKVM", "kvm"),
    ("Linux KVM Hv", "kvm"),
    ("TCGTCGTCGTCG", "qemu"),
    ("VMwareVMware", "vmware"),
    ("Microsoft Hv", "microsoft"),
    ("XenVMMXenVMM", "xen"),
    ("VBoxVBoxVBox", "oracle"),
    ("bhyve bhyve ", "bhyve"),
    ("ACRNACRNACRN", "acrn"),
];

/// DMI vendor prefixes and the systemd-detect-virt name each means.
const DMI_VENDORS: [(&str, &str); 17] = [
    ("KVM", "kvm"),
    ("OpenStack", "kvm"),
    ("KubeVirt", "kvm"),
    ("Amazon EC2", "amazon"),
    ("QEMU", "qemu"),
    ("VMware", "vmware"),
    ("VMW", "vmware"),
    ("innotek GmbH", "oracle"),
    ("VirtualBox", "oracle"),
    ("Oracle Corporation", "oracle"),
    ("Xen", "xen"),
    ("Bochs", "bochs"),
    ("Parallels", "parallels"),
    ("BHYVE", "bhyve"),
    ("Hyper-V", "microsoft"),
    ("Apple Virtualization", "apple"),
    // Only GCE's product name: Chromebooks say "Google" as their vendor too.
    ("Google Compute Engine", "google"),
];

/// The hypervisor named in systemd-detect-virt's vocabulary, or `None` on bare metal.
///
/// The order is systemd's: DMI names that a KVM- or Hyper-V-based platform still wants to be
/// known by (Amazon, VirtualBox, Parallels, Xen) win; then the CPUID signature, which tells
/// KVM from plain QEMU; then the rest of DMI; then the device tree and the cpuinfo flag.
pub fn detect_virtualization(inputs: &VirtInputs) -> Option<&'static str> {
    let dmi = detect_dmi_vm(inputs);
    if let Some(name @ ("oracle" | "xen" | "amazon" | "parallels")) = dmi {
        return Some(name);
    }
    if inputs.hypervisor_type.as_deref() == Some("xen") {
        // dom0 hosts the other domains; systemd does not count it as a VM.
        let dom0 = inputs
            .xen_capabilities
            .as_deref()
            .is_some_and(|c| c.contains("control_d"));
        return (!dom0).then_some("xen");
    }
    let cpuid = inputs.cpuid_vendor.as_deref().map(|vendor| {
        CPUID_VENDORS
            .iter()
            .find(|(signature, _)| vendor.trim_end_matches('\0') == signature.trim_end())
            .map_or("vm-other", |&(_, name)| name)
    });
    if let found @ Some(_) = cpuid.or(dmi) {
        return found;
    }
    if let Some(compatible) = &inputs.device_tree_hypervisor {
        return Some(if compatible.contains("linux,kvm") {
            "kvm"
        } else if compatible.contains("xen") {
            "xen"
        } else if compatible.contains("vmware") {
            "vmware"
        } else {
            "vm-other"
        });
    }
    inputs.cpu_hypervisor_flag.then_some("vm-other")
}

/// What the DMI strings alone say.
fn detect_dmi_vm(inputs: &VirtInputs) -> Option<&'static str> {
    let [product_name, sys_vendor, ..] = &inputs.dmi;
    for value in inputs.dmi.iter().flatten() {
        let Some(&(_, name)) = DMI_VENDORS.iter().find(|(p, _)| value.starts_with(p)) else {
            continue;
        };
        // EC2 bare-metal instances carry Amazon's DMI strings but run on no hypervisor.
        if name == "amazon"
            && product_name
                .as_deref()
                .is_some_and(|p| p.ends_with(".metal"))
        {
            return None;
        }
        return Some(name);
    }
    // Hyper-V Gen1 guests name neither "Hyper-V" nor a hypervisor vendor in DMI.
    if sys_vendor.as_deref() == Some("Microsoft Corporation")
        && product_name.as_deref() == Some("Virtual Machine")
    {
        return Some("microsoft");
    }
    None
}

/// The hypervisor vendor signature from CPUID, when CPUID says there is a hypervisor.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
pub fn cpuid_hypervisor_vendor() -> Option<String> {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::__cpuid;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::__cpuid;
    // Leaf 1, ECX bit 31: "hypervisor present"; leaf 0x4000_0000 then names it in EBX/ECX/EDX.
    if __cpuid(1).ecx >> 31 & 1 == 0 {
        return None;
    }
    let leaf = __cpuid(0x4000_0000);
    let bytes: Vec<u8> = [leaf.ebx, leaf.ecx, leaf.edx]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    Some(
        String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .to_owned(),
    )
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
pub fn cpuid_hypervisor_vendor() -> Option<String> {
    None
}

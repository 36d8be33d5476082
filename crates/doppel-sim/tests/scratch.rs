use doppel_sim::chiller::*;
use doppel_sim::plant::*;
use doppel_sim::policy::PolicyKind;
use doppel_sim::run::*;

struct Print { every: u64 }
impl Observer for Print {
    fn observe(&mut self, v: &StepView) -> doppel_sim::Result<bool> {
        if v.step % self.every == 0 {
            let t = v.truth;
            println!("day {:.2} supply {:.2} return {:.2} flow {:.0} load {:.0} power {:.0} tw {:.1} amb {:.1} fan {:.0} ch1 {:.0}/{:.0} ch2 {:.0}/{:.0} ch3 {:.0} p1 vib {:.2} st {} {} {} {}",
              v.t_s/86400.0, t[24+15], t[24+15+1], t[24+15+2], t[24+15+9], t[24+15+10], t[24+15+5], t[24+15+7], t[24+15+6], t[25], t[26], t[30], t[31], t[35], t[5], t[0], t[6], t[12], t[18]);
        }
        Ok(true)
    }
}

#[test]
fn scratch() {
    for policy in [PolicyKind::None, PolicyKind::Rules] {
        let mut plant = ChillerPlant::new(ChillerPlantConfig::default(), 7).unwrap();
        let mut pol = policy.build(&plant).unwrap();
        let mut obs = Print { every: 720 };
        let out = simulate(&mut plant, pol.as_mut(), vec![], RunSettings { days: 30.0, step_s: 60.0 }, Some(&mut obs)).unwrap();
        println!("{policy:?} {:#?} failures {:?} refused {:?}", out.kpis, out.failures, out.refused);
    }
}

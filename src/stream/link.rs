//! The links this origin gives Pushpin to come back by (`Grip-Link`): to
//! one user's channel, signed with the database's stream key, so that no
//! browser can follow one to another user's events, and any member of a
//! cluster can answer one that another gave.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Where every link points.
pub(super) const NEXT_PATH: &str = "/.price-alertd/next";

/// Signs and checks links.
pub(super) struct Links {
    key: Vec<u8>,
}

/// What a link names: a channel (by its user's segment), and where its
/// events resume (an event id) when the link pages through them.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Followed {
    pub segment: String,
    pub after: Option<String>,
}

impl Links {
    pub(super) fn new(key: &str) -> Links {
        Links {
            key: key.as_bytes().to_vec(),
        }
    }

    fn mac(&self, segment: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(b"price-alertd stream link\0");
        mac.update(segment.as_bytes());
        mac
    }

    /// The link back to `segment`'s channel, its events after `after` if
    /// given (else after what Pushpin says it has, `Grip-Last`).
    pub(super) fn next(&self, segment: &str, after: Option<&str>) -> String {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.mac(segment).finalize().into_bytes());
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("c", segment).append_pair("t", &token);
        if let Some(after) = after {
            query.append_pair("a", after);
        }
        format!("{NEXT_PATH}?{}", query.finish())
    }

    /// What a link's query names, if this origin's key signed it.
    pub(super) fn follow(&self, query: &str) -> Option<Followed> {
        let (mut segment, mut token, mut after) = (None, None, None);
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "c" => segment = Some(value.into_owned()),
                "t" => token = Some(value.into_owned()),
                "a" => after = Some(value.into_owned()),
                _ => return None,
            }
        }
        let (segment, token) = (segment?, token?);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        // Compared in constant time.
        self.mac(&segment).verify_slice(&token).ok()?;
        Some(Followed { segment, after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_names_only_the_channel_it_was_signed_for() {
        let links = Links::new("key");
        let link = links.next("a%2Fb", Some("pa_x_1_1"));
        let query = link.strip_prefix(&format!("{NEXT_PATH}?")).unwrap();
        assert_eq!(
            links.follow(query),
            Some(Followed {
                segment: "a%2Fb".to_owned(),
                after: Some("pa_x_1_1".to_owned())
            })
        );
        let plain = links.next("alice", None);
        let query = plain.split_once('?').unwrap().1;
        assert_eq!(links.follow(query).unwrap().after, None);
        // Another channel under the same token, another key, or no token.
        let forged = query.replace("c=alice", "c=bob");
        assert_eq!(links.follow(&forged), None);
        assert_eq!(Links::new("other").follow(query), None);
        assert_eq!(links.follow("c=alice"), None);
        assert_eq!(links.follow(&format!("{query}&x=1")), None);
    }
}
